"""The report's latency figures: exact, whether the values are sorted in memory or counted."""

from __future__ import annotations

import random

import polars as pl

from batchchat.report.quantiles import HOLD
from batchchat.report.stats import latency_summary


def _rows(latencies: list[float | None]) -> pl.LazyFrame:
    n = len(latencies)
    return pl.LazyFrame(
        {"status": ["ok"] * (n - 1) + ["error"], "cached": [False] * n, "latency_ms": latencies},
        schema={"status": pl.String, "cached": pl.Boolean, "latency_ms": pl.Float64},
    )


def test_latency_of_more_rows_than_are_held_matches_the_whole_column() -> None:
    rng = random.Random(15)
    values = [round(rng.lognormvariate(3, 1), 3) for _ in range(HOLD + 5_000)]
    latencies: list[float | None] = [*values, None, 99_999.0]  # a null; the error row's value
    summary = latency_summary(_rows(latencies))

    column = pl.Series(values)
    assert summary.count == len(values)
    for q, got in ((0.5, summary.p50), (0.9, summary.p90), (0.99, summary.p99)):
        assert got == column.quantile(q, "nearest")
    assert summary.max == max(values)
    assert abs(summary.mean - sum(values) / len(values)) < 1e-9
    # the histogram's bins hold exactly the values between their edges
    start, width = summary.histogram[0].lo, summary.histogram[0].hi - summary.histogram[0].lo
    by_hand = dict(((column - start) / width).floor().cast(pl.Int64).value_counts().iter_rows())
    assert [b.count for b in summary.histogram] == [
        by_hand.get(i, 0) for i in range(len(summary.histogram))
    ]


def test_a_few_latencies_are_sorted_as_they_are() -> None:
    summary = latency_summary(_rows([4.0, 1.0, 3.0, 2.0, None, 0.5]))
    assert (summary.count, summary.p50, summary.p90, summary.max) == (4, 3.0, 4.0, 4.0)
    assert [b.count for b in summary.histogram if b.count] == [1, 1, 1, 1]


def test_no_latency_gives_an_empty_summary() -> None:
    summary = latency_summary(_rows([None, 5.0]))
    assert summary.count == 0 and summary.histogram == []
