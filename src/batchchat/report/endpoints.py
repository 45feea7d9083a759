"""The report's per-endpoint section of a pool job: who answered what, how well, at what cost.

Attempts, 429s and failed attempts add up over every run's counters (``runs/*.json``);
rows, latency and cost come from the final results' ``endpoint`` column (the endpoint
that answered each row, or that its last attempt failed on).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from batchchat.models import EndpointStats, ExecutionStats

_OK = pl.col("status") == "ok"


@dataclass(frozen=True, slots=True)
class EndpointReport:
    """One endpoint of a pool, over every run of the output directory."""

    name: str
    #: attempts sent to it; of them answered 429; of them failed otherwise (5xx, 4xx, none)
    requests_sent: int = 0
    rate_limited: int = 0
    failed_attempts: int = 0
    #: final results it gave: answered ok, or failed for good on it
    rows_ok: int = 0
    rows_error: int = 0
    #: latency (ms) of the rows it answered, first attempt to answer
    p50_ms: float | None = None
    p90_ms: float | None = None
    #: USD of the rows it answered that are priced (None: none is)
    cost_usd: float | None = None
    #: times it was put out for a cool-down; why it was taken out for a run (the last run's)
    cooldowns: int = 0
    removed: str | None = None


def endpoint_reports(rows: pl.LazyFrame, runs: Sequence[ExecutionStats]) -> list[EndpointReport]:
    """Every endpoint the runs counted or the results name, in the order the runs first
    named them (the spec's order); empty for a job with one endpoint."""
    counted = _counted(runs)
    answered = _answered(rows)
    names = [*counted, *(name for name in answered if name not in counted)]
    reports = []
    for name in names:
        counts = counted.get(name, EndpointStats())
        row = answered.get(name, {})
        failed = sum(n for code, n in counts.status_counts.items() if code != 429 and code >= 300)
        reports.append(
            EndpointReport(
                name=name,
                requests_sent=counts.requests_sent,
                rate_limited=counts.rate_limited,
                failed_attempts=failed + counts.status_counts.get(0, 0),
                rows_ok=int(row.get("ok") or 0),
                rows_error=int(row.get("error") or 0),
                p50_ms=row.get("p50"),
                p90_ms=row.get("p90"),
                cost_usd=row.get("cost") if row.get("priced") else None,
                cooldowns=counts.cooldowns,
                removed=counts.removed,
            )
        )
    return reports


def _counted(runs: Sequence[ExecutionStats]) -> dict[str, EndpointStats]:
    total: dict[str, EndpointStats] = {}
    for run in runs:
        for name, counts in run.endpoints.items():
            into = total.setdefault(name, EndpointStats())
            into.requests_sent += counts.requests_sent
            into.rate_limited += counts.rate_limited
            into.cooldowns += counts.cooldowns
            for code, n in counts.status_counts.items():
                into.status_counts[code] = into.status_counts.get(code, 0) + n
            into.removed = counts.removed  # the latest run says whether it is out now
    return total


def _answered(rows: pl.LazyFrame) -> dict[str, dict[str, float | int | None]]:
    grouped = (
        rows.filter(pl.col("endpoint").is_not_null())
        .group_by("endpoint")
        .agg(
            ok=_OK.sum(),
            error=(~_OK).sum(),
            p50=pl.col("latency_ms").filter(_OK).quantile(0.5, "nearest"),
            p90=pl.col("latency_ms").filter(_OK).quantile(0.9, "nearest"),
            cost=pl.col("cost_usd").sum(),
            priced=pl.col("cost_usd").is_not_null().sum(),
        )
        .collect(engine="streaming")
    )
    found: dict[str, dict[str, float | int | None]] = {}
    for group in grouped.iter_rows(named=True):
        name = str(group.pop("endpoint"))
        found[name] = {key: _finite(value) for key, value in group.items()}
    return found


def _finite(value: float | int | None) -> float | int | None:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
