"""The report's aggregations over the final results and the runs' counters.

Each takes the lazy frame of final results (one row per (row_id, sample)) or the saved
run stats and computes one part of the report in polars' streaming engine, so a
million-row ledger is never held whole.
"""

from __future__ import annotations

import math
from typing import Any

import polars as pl

from batchchat.models import ExecutionStats, Usage
from batchchat.pricing import STANDARD, PriceTable, Tier
from batchchat.report.asks import CACHED, EARLIER_ASKS_USD
from batchchat.report.model import (
    EXAMPLE_ROW_IDS,
    HISTOGRAM_BINS,
    MAX_TIMELINE_POINTS,
    UNKNOWN_MODEL,
    ErrorGroup,
    HistogramBin,
    LatencySummary,
    ModelCost,
    RunReport,
    Timeline,
    TimelinePoint,
    TokenCounts,
)
from batchchat.report.quantiles import HOLD, VALUE, nearest_rank, select_rank

_OK = pl.col("status") == "ok"


def count_rows(report: RunReport, rows: pl.LazyFrame) -> None:
    counts = rows.select(
        total=pl.len(),
        ok=_OK.sum(),
        started_at=pl.col("started_at").min(),
        finished_at=pl.col("finished_at").max(),
    ).collect(engine="streaming")
    report.rows_total = int(counts["total"][0])
    report.rows_ok = int(counts["ok"][0] or 0)
    report.rows_error = report.rows_total - report.rows_ok
    if report.rows_total:
        report.started_at = counts["started_at"][0]
        report.finished_at = counts["finished_at"][0]
        if report.started_at and report.finished_at:
            span = report.finished_at - report.started_at
            report.wall_time_s = span.total_seconds()


def count_requests(report: RunReport, runs: list[ExecutionStats]) -> None:
    if not runs:
        return
    report.run_ids = [run.run_id for run in runs]
    report.requests_sent = sum(run.requests_sent for run in runs)
    report.retries = sum(run.retries for run in runs)
    report.rate_limited = sum(run.rate_limited for run in runs)
    for run in runs:
        for code, count in run.status_counts.items():
            report.status_counts[code] = report.status_counts.get(code, 0) + count
    last = runs[-1]
    report.rows_skipped = last.skipped
    # a run that never wrote finished_at died (or still runs): its stats are its last save
    report.stop_reason = last.stop_reason.value if last.finished_at else "unfinished"
    report.started_at = runs[0].started_at
    report.finished_at = last.finished_at or report.finished_at
    report.wall_time_s = sum(_run_seconds(run) for run in runs)


def _run_seconds(run: ExecutionStats) -> float:
    if run.finished_at is not None:
        return max((run.finished_at - run.started_at).total_seconds(), 0.0)
    return float(max((b.second for b in run.timeline), default=-1) + 1)


# -- tokens and cost ---------------------------------------------------------------------------

# a row served from the response cache was not paid for: its tokens are not this job's
_BILLABLE = (
    _OK | pl.col("prompt_tokens").is_not_null() | pl.col("cost_usd").is_not_null()
) & ~CACHED
_USAGE_KNOWN = pl.col("prompt_tokens").is_not_null() & pl.col("completion_tokens").is_not_null()
_TOKEN_SUMS = {
    "prompt": pl.col("prompt_tokens").sum(),
    "cached": pl.col("cached_tokens").sum(),
    "completion": pl.col("completion_tokens").sum(),
    "reasoning": pl.col("reasoning_tokens").sum(),
    "total": pl.coalesce(
        "total_tokens", pl.col("prompt_tokens") + pl.col("completion_tokens")
    ).sum(),
}


def model_costs(
    rows: pl.LazyFrame, prices: PriceTable | None, online_tier: Tier = STANDARD
) -> tuple[list[ModelCost], list[str]]:
    billable = rows.filter(_BILLABLE).with_columns(pl.col("model").fill_null(UNKNOWN_MODEL))
    groups = billable.group_by("model").agg(
        rows=pl.len(),
        usage_missing=(~_USAGE_KNOWN).sum(),
        stored_cost=pl.col("cost_usd").sum(),
        stored_priced=pl.col("cost_usd").is_not_null().sum(),
        earlier_asks=EARLIER_ASKS_USD.sum(),
        **_TOKEN_SUMS,
    )
    summed, repriced = _with_repricing(groups, billable, prices, online_tier)
    models: list[ModelCost] = []
    usage_missing: dict[str, int] = {}
    for group in summed.iter_rows(named=True):
        name = group["model"]
        if prices is not None:
            priced = prices.lookup(None if name == UNKNOWN_MODEL else name) is not None
            cost, priced_rows = repriced.get(name, (0.0, 0))
            # a re-asked row's earlier answers left only their cost, not their tokens
            cost += group["earlier_asks"] or 0.0
        else:
            priced = group["stored_priced"] > 0 or group["rows"] == group["usage_missing"]
            cost, priced_rows = group["stored_cost"], group["stored_priced"]
        unpriced = group["rows"] - priced_rows
        models.append(
            ModelCost(
                model=name,
                rows=group["rows"],
                tokens=TokenCounts(**{k: int(group[k] or 0) for k in _TOKEN_SUMS}),
                cost_usd=float(cost) if priced_rows else None,
                unpriced_rows=unpriced,
                priced=priced,
            )
        )
        usage_missing[name] = group["usage_missing"]
    models.sort(key=lambda m: (-(m.cost_usd or 0.0), -m.rows, m.model))
    warnings = [w for m in models for w in _cost_warnings(m, usage_missing[m.model])]
    return models, warnings


def _with_repricing(
    groups: pl.LazyFrame, billable: pl.LazyFrame, prices: PriceTable | None, online_tier: Tier
) -> tuple[pl.DataFrame, dict[str, tuple[float, int]]]:
    """The per-model sums and, with ``prices``, the repricing.

    Two streaming passes, not one ``collect_all``: polars would hold the rows both read
    (every billable row's columns, +77 MB for 1M rows) to scan them once.
    """
    summed = groups.collect(engine="streaming")
    if prices is None:
        return summed, {}
    summed_tokens = _reprice_sums(billable, online_tier).collect(engine="streaming")
    return summed, _reprice(summed_tokens, prices)


def online_cost(rows: pl.LazyFrame, prices: PriceTable, online_tier: Tier) -> float | None:
    """What the rows would have cost at standard (online) prices, when some were billed
    otherwise (answered by a batch, or sent as flex); None when all were standard."""
    billable = rows.filter(_BILLABLE)
    if online_tier == STANDARD:
        batched = billable.select(pl.col("batch_id").is_not_null().any()).collect()
        if not batched.item():
            return None
    sums = _reprice_sums(billable, online_tier).collect(engine="streaming")
    repriced = _reprice(sums.with_columns(tier=pl.lit(STANDARD)), prices)
    return math.fsum(cost for cost, _ in repriced.values())


def _reprice_sums(billable: pl.LazyFrame, online_tier: Tier = STANDARD) -> pl.LazyFrame:
    """Token sums per (model, has-reasoning, price tier) group, the token counts clamped;
    a row answered by a batch is billed at batch prices, the others at ``online_tier``."""
    tier = pl.when(pl.col("batch_id").is_not_null()).then(pl.lit("batch"))
    prompt = pl.col("prompt_tokens")
    completion = pl.col("completion_tokens")
    return (
        billable.filter(_USAGE_KNOWN)
        .with_columns(
            cached=pl.min_horizontal(pl.col("cached_tokens").fill_null(0).clip(0), prompt),
            reasoning=pl.min_horizontal(
                pl.col("reasoning_tokens").fill_null(0).clip(0), completion
            ),
        )
        .group_by(
            "model",
            (pl.col("reasoning") > 0).alias("thinking"),
            tier.otherwise(pl.lit(online_tier)).alias("tier"),
        )
        .agg(
            n=pl.len(),
            prompt=prompt.sum(),
            completion=completion.sum(),
            cached=pl.col("cached").sum(),
            reasoning=pl.col("reasoning").sum(),
        )
    )


def _reprice(sums: pl.DataFrame, prices: PriceTable) -> dict[str, tuple[float, int]]:
    """USD and priced row count per model, from the token counts.

    Cost is linear in the (clamped) token counts, so each (model, has-reasoning) group is
    priced once from its sums: one formula, ModelPrice.cost_usd, for rows and reports alike.
    """
    result: dict[str, tuple[float, int]] = {}
    for group in sums.iter_rows(named=True):
        model = None if group["model"] == UNKNOWN_MODEL else group["model"]
        price = prices.lookup(model, group["tier"])
        if price is None:
            continue
        usage = Usage(
            prompt_tokens=group["prompt"],
            completion_tokens=group["completion"],
            cached_tokens=group["cached"],
            reasoning_tokens=group["reasoning"],
        )
        cost, n = result.get(group["model"], (0.0, 0))
        result[group["model"]] = (cost + (price.cost_usd(usage) or 0.0), n + group["n"])
    return result


def _cost_warnings(model: ModelCost, usage_missing: int) -> list[str]:
    name, unpriced = model.model, model.unpriced_rows
    if not unpriced:
        return []
    if not model.priced:
        hint = "add it under pricing: in the job spec"
        return [f"model {name} has no price: cost unknown for {unpriced} rows ({hint})"]
    if unpriced > usage_missing:  # rows billed at a tier the model has no price for
        hint = f"set pricing.{name}.batch (or .flex) in the job spec"
        return [
            f"model {name} has no batch or flex price: cost unknown for {unpriced} rows ({hint})"
        ]
    return [f"model {name}: the server reported no usage for {usage_missing} rows: cost unknown"]


def sum_tokens(counts: Any) -> TokenCounts:
    total: dict[str, int] = dict.fromkeys(("prompt", "cached", "completion", "reasoning"), 0)
    total["total"] = 0
    for count in counts:
        for key in total:
            total[key] += getattr(count, key)
    return TokenCounts(**total)


# -- outcomes ----------------------------------------------------------------------------------


def finish_reasons(rows: pl.LazyFrame) -> dict[str, int]:
    reasons = rows.filter(_OK).select("finish_reason")
    if isinstance(reasons.collect_schema()["finish_reason"], pl.List):  # n > 1: per choice
        reasons = reasons.explode("finish_reason")
    counts = (
        reasons.group_by(pl.col("finish_reason").fill_null("(none)"))
        .agg(n=pl.len())
        .sort(["n", "finish_reason"], descending=[True, False])
        .collect(engine="streaming")
    )
    return {str(reason): int(n) for reason, n in counts.iter_rows()}


def error_groups(rows: pl.LazyFrame) -> list[ErrorGroup]:
    errors = rows.filter(~_OK).select("row_id", "sample", "error_type", "error_message")
    grouped = (
        errors.with_columns(pl.col("error_type").fill_null("unknown"))
        .sort("row_id", "sample")
        .group_by("error_type")
        .agg(
            count=pl.len(),
            sample_message=pl.col("error_message").drop_nulls().first(),
            example_row_ids=pl.col("row_id").unique(maintain_order=True).head(EXAMPLE_ROW_IDS),
        )
        .sort(["count", "error_type"], descending=[True, False])
        .collect()
    )
    return [ErrorGroup(**group) for group in grouped.iter_rows(named=True)]


def latency_summary(rows: pl.LazyFrame) -> LatencySummary:
    """Latency of the ok rows that were sent: exact quantiles, mean, max and a histogram,
    in memory that does not grow with the rows (see :mod:`batchchat.report.quantiles`)."""
    values = rows.filter(_OK & ~CACHED).select(
        pl.col("latency_ms").drop_nulls().cast(pl.Float64).alias(VALUE)
    )
    found = values.select(
        count=pl.len(), mean=pl.col(VALUE).mean(), low=pl.col(VALUE).min(), high=pl.col(VALUE).max()
    ).collect(engine="streaming")
    count = int(found["count"][0])
    if not count:
        return LatencySummary()
    low, high = float(found["low"][0]), float(found["high"][0])
    if count <= HOLD:
        # sorted once: a quantile of a sorted column reads it in place
        ordered = values.collect(engine="streaming").to_series().sort()
        p50, p90, p99 = (float(ordered[nearest_rank(q, count)]) for q in (0.5, 0.9, 0.99))
    else:
        p50, p90, p99 = (
            select_rank(values, nearest_rank(q, count), low=low, high=high, count=count)
            for q in (0.5, 0.9, 0.99)
        )
    return LatencySummary(
        count=count,
        p50=p50,
        p90=p90,
        p99=p99,
        mean=float(found["mean"][0]),
        max=high,
        histogram=_histogram(values, low, high),
    )


def _histogram(values: pl.LazyFrame, low: float, high: float) -> list[HistogramBin]:
    width = _nice_step((high - low) / HISTOGRAM_BINS) if high > low else 1.0
    start = math.floor(low / width) * width
    index = ((pl.col(VALUE) - start) / width).floor().cast(pl.Int64).alias("bin")
    binned = values.group_by(index).agg(n=pl.len()).collect(engine="streaming")
    counts = dict(binned.iter_rows())
    last = max(counts)
    return [
        HistogramBin(
            lo=round(start + i * width, 9),
            hi=round(start + (i + 1) * width, 9),
            count=counts.get(i, 0),
        )
        for i in range(last + 1)
    ]


def _nice_step(raw: float) -> float:
    """The smallest 1, 2 or 5 × 10^k at least ``raw``: bins people can read."""
    magnitude = 10.0 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)


def timeline(runs: list[ExecutionStats]) -> Timeline:
    dense: list[tuple[int, int, int, int, int]] = []
    starts: list[float] = []
    for run in runs:
        starts.append(float(len(dense)))
        length = max(
            math.ceil(_run_seconds(run)), max((b.second + 1 for b in run.timeline), default=0)
        )
        seconds = [(0, 0, 0, 0, 0)] * length
        for b in run.timeline:
            seconds[b.second] = (b.requests, b.rate_limited, b.ok, b.errors, b.tokens)
        dense.extend(seconds)
    bucket = max(1, math.ceil(len(dense) / MAX_TIMELINE_POINTS))
    points = []
    for i in range(0, len(dense), bucket):
        chunk = dense[i : i + bucket]
        sums = [sum(values) for values in zip(*chunk, strict=True)]
        points.append(TimelinePoint(float(i), *sums))
    return Timeline(bucket_s=bucket, points=points, run_starts_s=starts)
