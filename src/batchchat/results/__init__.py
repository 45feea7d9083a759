"""Results: the output directory and its typed Parquet ledger, written crash-safe and read back."""
