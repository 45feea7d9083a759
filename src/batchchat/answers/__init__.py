"""Answers: whether one is what the job asked for (JSON, schema, label, complete), as a check."""
