"""The report's figures of how answers were come by: the response cache, re-asks, parse status.

Counted over the final rows, like the rest of the report, so a resumed or re-run output
directory reports every row once: a row served from the cache is a hit (cost 0, its
``cost_saved_usd`` saved); a row asked again has ``reasks`` and the cost of each answer
(``ask_costs_usd``: the first ask's, then each re-ask's).
"""

from __future__ import annotations

from typing import Any

import polars as pl

_OK = pl.col("status") == "ok"
CACHED = pl.col("cached").fill_null(False)
#: what the earlier answers of a re-asked row cost: all its asks but the final one
EARLIER_ASKS_USD = (
    pl.col("ask_costs_usd").list.sum() - pl.col("ask_costs_usd").list.last().fill_null(0.0)
).fill_null(0.0)
#: what the answers to re-asks cost: all the row's asks but the first
_REASKS_USD = (
    pl.col("ask_costs_usd").list.sum() - pl.col("ask_costs_usd").list.first().fill_null(0.0)
).fill_null(0.0)


def cache_summary(rows: pl.LazyFrame) -> dict[str, Any] | None:
    """``{"hits", "saved_usd"}`` over the final rows; None when no row came from the cache."""
    found = (
        rows.filter(_OK & CACHED)
        .select(
            hits=pl.len(),
            saved_usd=pl.col("cost_saved_usd").sum(),
            priced=pl.col("cost_saved_usd").is_not_null().sum(),
        )
        .collect(engine="streaming")
    )
    hits = int(found["hits"][0])
    if not hits:
        return None
    return {"hits": hits, "saved_usd": _usd(found, "saved_usd"), "unpriced": hits - _priced(found)}


def reask_summary(rows: pl.LazyFrame) -> dict[str, Any] | None:
    """Rows asked again, the re-asks sent, what their answers cost, and how the rows
    ended (``fixed``: parsed in the end; ``still_failing``: an honest parse status after
    every allowed re-ask). None when no row was asked again."""
    asked = rows.filter(_OK & (pl.col("reasks").fill_null(0) > 0))
    found = asked.select(
        rows=pl.len(),
        reasks=pl.col("reasks").sum(),
        cost_usd=_REASKS_USD.sum(),
        priced=pl.col("ask_costs_usd").list.drop_nulls().list.len().sum(),
        fixed=(pl.col("parse_status") == "ok").sum(),
    ).collect(engine="streaming")
    count = int(found["rows"][0])
    if not count:
        return None
    fixed = int(found["fixed"][0] or 0)
    return {
        "rows": count,
        "reasks": int(found["reasks"][0] or 0),
        "cost_usd": _usd(found, "cost_usd"),
        "fixed": fixed,
        "still_failing": count - fixed,
    }


def _priced(found: pl.DataFrame) -> int:
    return int(found["priced"][0] or 0)


def _usd(found: pl.DataFrame, column: str) -> float | None:
    """The sum in ``column``; None when nothing in it had a price (unknown, never $0)."""
    if not _priced(found):
        return None
    return round(float(found[column][0] or 0.0), 10)


def parse_statuses(rows: pl.LazyFrame) -> dict[str, int]:
    """How many ok rows ended with each ``parse_status`` (empty when the job checks nothing)."""
    counts = (
        rows.filter(_OK & pl.col("parse_status").is_not_null())
        .group_by("parse_status")
        .agg(n=pl.len())
        .sort(["n", "parse_status"], descending=[True, False])
        .collect(engine="streaming")
    )
    return {str(status): int(n) for status, n in counts.iter_rows()}
