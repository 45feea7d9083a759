"""Exact quantiles of a column too long to hold: narrowed down by counting, then sorted.

The ``nearest`` quantile q of n values is the value of rank round(q·(n−1)) in sorted order,
as polars computes it. Up to :data:`HOLD` values are simply sorted. More are counted into
:data:`BUCKETS` equal-width buckets between their least and greatest value (one streaming
pass that holds only the counts); the bucket holding the rank is kept and split again,
until what is left fits in :data:`HOLD` values or is one value repeated. The bucket of a
value never decreases as the value grows, so ranks carry over exactly: the answer is the
one sorting the whole column would give, in memory that does not grow with the column.
"""

from __future__ import annotations

import math
from typing import Any

import polars as pl

#: values sorted in memory at most (8 bytes each)
HOLD = 1 << 18
#: buckets per counting pass: each pass narrows the range about this many times
BUCKETS = 1 << 12
#: the one column of the frames this module reads
VALUE = "value"


def nearest_rank(q: float, n: int) -> int:
    """The 0-based rank of the ``nearest`` quantile ``q`` of ``n`` values (half rounds up)."""
    position = q * (n - 1)
    whole = math.floor(position)
    return int(whole + (1 if position - whole >= 0.5 else 0))


def select_rank(
    values: pl.LazyFrame, rank: int, *, low: float, high: float, count: int, hold: int = HOLD
) -> float:
    """The value of 0-based ``rank`` among ``values`` (a frame of one Float64 column,
    :data:`VALUE`, without nulls), whose least and greatest are ``low`` and ``high`` and
    whose length is ``count``; at most about ``hold`` values are held at once."""
    while count > hold and (high - low) / BUCKETS > 0:
        bucket = _bucket(low, high)
        counts = (
            values.group_by(bucket.alias("bucket"))
            .agg(n=pl.len(), low=pl.col(VALUE).min(), high=pl.col(VALUE).max())
            .sort("bucket")
            .collect(engine="streaming")
        )
        chosen, rank = _bucket_of(counts, rank)
        values = values.filter(bucket == chosen["bucket"])
        low, high, count = float(chosen["low"]), float(chosen["high"]), int(chosen["n"])
    if high <= low:
        return low  # every value left is the same
    ordered = values.collect(engine="streaming").to_series().sort()
    return float(ordered[rank])


def _bucket_of(counts: pl.DataFrame, rank: int) -> tuple[dict[str, Any], int]:
    """The bucket (of ``counts``, in bucket order) holding ``rank``, and the rank within it."""
    for bucket in counts.iter_rows(named=True):
        if rank < bucket["n"]:
            return bucket, rank
        rank -= bucket["n"]
    raise ValueError(f"rank {rank} is past the {counts['n'].sum()} values counted")


def _bucket(low: float, high: float) -> pl.Expr:
    """Which of :data:`BUCKETS` equal-width buckets over [low, high] a value falls in:
    never smaller for a greater value (each step is monotone; the top edge is clipped)."""
    width = (high - low) / BUCKETS
    index = ((pl.col(VALUE) - low) / width).floor().clip(0, BUCKETS - 1)
    return index.cast(pl.Int64)
