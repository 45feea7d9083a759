"""The run report: what it cost, what came back, what failed and why, how fast it was.

Built from an output directory alone -- the result parts, the run stats files
(``runs/*.json``) and the manifest -- so it works for finished, partial and
interrupted runs alike, and ``batchchat report DIR`` can rebuild it at any time.
The keys of :meth:`RunReport.to_dict` (``report.json``) are stable; scripts read them.

Counting rules: a "row" is one (row_id, sample) pair, counted once with its final
outcome (the ok result if there is one); tokens and cost add up over those rows;
requests, retries and 429s add up over every attempt of every run.
"""

from __future__ import annotations

import importlib.metadata
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import polars as pl
from rich.console import RenderableType

from batchchat.models import ExecutionStats, Usage
from batchchat.pricing import PriceTable
from batchchat.resume import RESULTS_DIR, has_repeated_keys, scan_results
from batchchat.runstats import load_input_issues, load_stats

SCHEMA_VERSION = 1
TOP_ERRORS = 5
EXAMPLE_ROW_IDS = 5
MAX_TIMELINE_POINTS = 300
HISTOGRAM_BINS = 24
UNKNOWN_MODEL = "(unknown)"


@dataclass(frozen=True, slots=True)
class TokenCounts:
    prompt: int = 0
    cached: int = 0
    completion: int = 0
    reasoning: int = 0
    total: int = 0


@dataclass(frozen=True, slots=True)
class ModelCost:
    """Tokens and cost of the rows one model answered."""

    model: str
    rows: int
    tokens: TokenCounts
    #: USD over the rows whose cost is known; None when no row of this model is priced
    cost_usd: float | None
    #: rows whose cost is unknown: the model has no price, or the server sent no usage
    unpriced_rows: int
    #: whether the model has a price at all
    priced: bool


@dataclass(frozen=True, slots=True)
class ErrorGroup:
    error_type: str
    count: int
    sample_message: str | None
    example_row_ids: list[str]


@dataclass(frozen=True, slots=True)
class HistogramBin:
    lo: float
    hi: float
    count: int


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Latency (ms) of the successful rows' final attempts."""

    count: int = 0
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    mean: float | None = None
    max: float | None = None
    histogram: list[HistogramBin] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class TimelinePoint:
    #: start of the bucket, seconds since the first run started (runs placed end to end)
    t_s: float
    requests: int
    rate_limited: int
    ok: int
    errors: int
    tokens: int


@dataclass(frozen=True, slots=True)
class Timeline:
    bucket_s: int = 1
    points: list[TimelinePoint] = field(default_factory=list)
    #: where each run begins on the time axis
    run_starts_s: list[float] = field(default_factory=list)


@dataclass(repr=False)
class RunReport:
    """Everything ``report.json`` holds; also what ``batchchat.run()`` returns."""

    output_dir: str
    job: str | None = None
    batchchat_version: str = "unknown"
    spec_hash: str | None = None
    run_ids: list[str] = field(default_factory=list)
    stop_reason: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    wall_time_s: float = 0.0
    #: independent requests per input row (``samples``); the row counts count each one
    samples: int = 1
    rows_total: int = 0
    rows_ok: int = 0
    rows_error: int = 0
    rows_skipped: int = 0
    requests_sent: int = 0
    retries: int = 0
    rate_limited: int = 0
    status_counts: dict[int, int] = field(default_factory=dict)
    tokens: TokenCounts = field(default_factory=TokenCounts)
    cost_usd: float = 0.0
    #: False when some rows' cost is unknown (see ``warnings``)
    cost_complete: bool = True
    models: list[ModelCost] = field(default_factory=list)
    finish_reasons: dict[str, int] = field(default_factory=dict)
    errors: list[ErrorGroup] = field(default_factory=list)
    latency: LatencySummary = field(default_factory=LatencySummary)
    rows_per_s: float | None = None
    tokens_per_s: float | None = None
    timeline: Timeline = field(default_factory=Timeline)
    warnings: list[str] = field(default_factory=list)
    #: label distribution, unmatched share and mean confidence (labeling jobs only)
    labels: dict[str, Any] | None = None
    #: input lines the last run skipped as malformed (``input.on_bad_line: skip``)
    input_issues: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The stable, JSON-ready form (``report.json``)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "job": self.job,
            "output_dir": self.output_dir,
            "batchchat_version": self.batchchat_version,
            "spec_hash": self.spec_hash,
            "run_ids": self.run_ids,
            "stop_reason": self.stop_reason,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "wall_time_s": round(self.wall_time_s, 3),
            "rows": {
                "total": self.rows_total,
                "ok": self.rows_ok,
                "error": self.rows_error,
                "skipped": self.rows_skipped,
                "samples_per_row": self.samples,
            },
            "requests": {
                "sent": self.requests_sent,
                "retries": self.retries,
                "rate_limited": self.rate_limited,
                "by_status": {str(code): n for code, n in sorted(self.status_counts.items())},
            },
            "tokens": asdict(self.tokens),
            "cost": {
                "total_usd": round(self.cost_usd, 10),
                "complete": self.cost_complete,
                "by_model": {m.model: _model_dict(m) for m in self.models},
            },
            "finish_reasons": dict(self.finish_reasons),
            "errors": {
                "total": self.rows_error,
                "by_type": {e.error_type: _without(asdict(e), "error_type") for e in self.errors},
            },
            "latency_ms": asdict(self.latency),
            "throughput": {"rows_per_s": self.rows_per_s, "tokens_per_s": self.tokens_per_s},
            "timeline": asdict(self.timeline),
            "warnings": list(self.warnings),
            "labels": self.labels,
            "input_issues": {
                "skipped_lines": len(self.input_issues),
                "examples": self.input_issues[:TOP_ERRORS],
            },
        }

    def __repr__(self) -> str:
        cost = f"{self.cost_usd:.6f}" + ("" if self.cost_complete else " (incomplete)")
        return (
            f"RunReport(job={self.job!r}, rows_ok={self.rows_ok}, rows_error={self.rows_error}, "
            f"rows_skipped={self.rows_skipped}, cost_usd={cost}, stop_reason={self.stop_reason!r})"
        )

    def _repr_markdown_(self) -> str:
        """How a notebook shows a report: the tables of report.md."""
        return render_markdown(self)

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2)


# -- building ----------------------------------------------------------------------------------


def build_report(out_dir: Path, *, prices: PriceTable | None = None) -> RunReport:
    """The report of an output directory (finished, partial or interrupted).

    Without ``prices`` the cost is the ``cost_usd`` stored with each result; with them,
    every row is priced again from its token counts.
    """
    out_dir = Path(out_dir)
    job, spec_hash = _read_manifest(out_dir)
    runs = load_stats(out_dir)
    rows = _final_results(out_dir)
    report = RunReport(
        output_dir=str(out_dir),
        job=job,
        batchchat_version=_version(),
        spec_hash=spec_hash,
    )
    _count_rows(report, rows)
    _count_requests(report, runs)
    models, warnings = _model_costs(rows, prices)
    report.models = models
    report.tokens = _sum_tokens(m.tokens for m in models)
    report.cost_usd = math.fsum(m.cost_usd or 0.0 for m in models)
    report.cost_complete = not any(m.unpriced_rows for m in models)
    report.warnings = warnings
    report.finish_reasons = _finish_reasons(rows)
    report.errors = _error_groups(rows)
    report.latency = _latency(rows)
    if report.wall_time_s > 0:
        report.rows_per_s = report.rows_total / report.wall_time_s
        report.tokens_per_s = report.tokens.total / report.wall_time_s
    report.timeline = _timeline(runs)
    report.labels = _labels(out_dir)
    report.samples = _samples_per_row(out_dir)
    report.input_issues = load_input_issues(out_dir)
    if report.input_issues:
        first = report.input_issues[0]
        report.warnings.append(
            f"{len(report.input_issues)} malformed input line(s) skipped, e.g. "
            f"{first['path']}:{first['line']}: {first['message']}"
        )
    if not runs and report.rows_total:
        report.warnings.append("no run stats found (runs/*.json): request counts are unknown")
    return report


def write_reports(out_dir: Path, report: RunReport) -> None:
    """Write ``report.json``, ``report.md`` and ``report.html`` into the output directory."""
    from batchchat.report_html import render_html  # the HTML renderer is only needed here

    out_dir = Path(out_dir)
    _write_atomic(out_dir / "report.json", report.to_json() + b"\n")
    _write_atomic(out_dir / "report.md", render_markdown(report).encode("utf-8"))
    _write_atomic(out_dir / "report.html", render_html(report).encode("utf-8"))


def render_markdown(report: RunReport) -> str:
    """``report.md``: the report for people, as tables."""
    from batchchat.report_text import render_markdown as render

    return render(report)


def render_table(report: RunReport) -> RenderableType:
    """The compact table printed at the end of ``batchchat run`` and by ``batchchat report``."""
    from batchchat.report_text import render_table as render

    return render(report)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _version() -> str:
    try:
        return importlib.metadata.version("batchchat")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


_OK = pl.col("status") == "ok"


def _count_rows(report: RunReport, rows: pl.LazyFrame) -> None:
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


def _count_requests(report: RunReport, runs: list[ExecutionStats]) -> None:
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
    report.stop_reason = last.stop_reason if last.finished_at else "unfinished"
    report.started_at = runs[0].started_at
    report.finished_at = last.finished_at or report.finished_at
    report.wall_time_s = sum(_run_seconds(run) for run in runs)


def _run_seconds(run: ExecutionStats) -> float:
    if run.finished_at is not None:
        return max((run.finished_at - run.started_at).total_seconds(), 0.0)
    return float(max((b.second for b in run.timeline), default=-1) + 1)


# -- tokens and cost ---------------------------------------------------------------------------

_BILLABLE = _OK | pl.col("prompt_tokens").is_not_null() | pl.col("cost_usd").is_not_null()
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


def _model_costs(
    rows: pl.LazyFrame, prices: PriceTable | None
) -> tuple[list[ModelCost], list[str]]:
    billable = rows.filter(_BILLABLE).with_columns(pl.col("model").fill_null(UNKNOWN_MODEL))
    groups = billable.group_by("model").agg(
        rows=pl.len(),
        usage_missing=(~_USAGE_KNOWN).sum(),
        stored_cost=pl.col("cost_usd").sum(),
        stored_priced=pl.col("cost_usd").is_not_null().sum(),
        **_TOKEN_SUMS,
    )
    summed, repriced = _with_repricing(groups, billable, prices)
    models: list[ModelCost] = []
    usage_missing: dict[str, int] = {}
    for group in summed.iter_rows(named=True):
        name = group["model"]
        if prices is not None:
            priced = prices.lookup(None if name == UNKNOWN_MODEL else name) is not None
            cost, priced_rows = repriced.get(name, (0.0, 0))
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
    groups: pl.LazyFrame, billable: pl.LazyFrame, prices: PriceTable | None
) -> tuple[pl.DataFrame, dict[str, tuple[float, int]]]:
    """The per-model sums and, with ``prices``, the repricing: one streaming pass for both."""
    if prices is None:
        return groups.collect(engine="streaming"), {}
    summed, sums = pl.collect_all([groups, _reprice_sums(billable)], engine="streaming")
    return summed, _reprice(sums, prices)


def _reprice_sums(billable: pl.LazyFrame) -> pl.LazyFrame:
    """Token sums per (model, has-reasoning) group, with the token counts clamped."""
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
        .group_by("model", (pl.col("reasoning") > 0).alias("thinking"))
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
        price = prices.lookup(None if group["model"] == UNKNOWN_MODEL else group["model"])
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
    return [f"model {name}: the server reported no usage for {usage_missing} rows: cost unknown"]


def _sum_tokens(counts: Any) -> TokenCounts:
    total: dict[str, int] = dict.fromkeys(("prompt", "cached", "completion", "reasoning"), 0)
    total["total"] = 0
    for count in counts:
        for key in total:
            total[key] += getattr(count, key)
    return TokenCounts(**total)


# -- outcomes ----------------------------------------------------------------------------------


def _finish_reasons(rows: pl.LazyFrame) -> dict[str, int]:
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


def _error_groups(rows: pl.LazyFrame) -> list[ErrorGroup]:
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


def _latency(rows: pl.LazyFrame) -> LatencySummary:
    # quantiles need the values: one float column of the ok rows, not the rows
    values = (
        rows.filter(_OK)
        .select(pl.col("latency_ms").drop_nulls().cast(pl.Float64))
        .collect(engine="streaming")
        .to_series()
    )
    if values.is_empty():
        return LatencySummary()
    return LatencySummary(
        count=values.len(),
        p50=_quantile(values, 0.50),
        p90=_quantile(values, 0.90),
        p99=_quantile(values, 0.99),
        mean=float(values.mean() or 0.0),  # type: ignore[arg-type]
        max=float(values.max() or 0.0),  # type: ignore[arg-type]
        histogram=_histogram(values),
    )


def _quantile(values: pl.Series, q: float) -> float:
    return float(values.quantile(q, "nearest") or 0.0)


def _histogram(values: pl.Series) -> list[HistogramBin]:
    low, high = float(values.min()), float(values.max())  # type: ignore[arg-type]
    width = _nice_step((high - low) / HISTOGRAM_BINS) if high > low else 1.0
    start = math.floor(low / width) * width
    index = ((values - start) / width).floor().cast(pl.Int64)
    counts = dict(index.value_counts().iter_rows())
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


def _timeline(runs: list[ExecutionStats]) -> Timeline:
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


# -- serialization helpers ---------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _model_dict(model: ModelCost) -> dict[str, Any]:
    data = _without(asdict(model), "model")
    data["cost_usd"] = None if model.cost_usd is None else round(model.cost_usd, 10)
    return data


def _without(data: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != key}


# -- reading an output directory ---------------------------------------------------------------

#: the result columns the report reads, with the type it reads them as
_COLUMNS: dict[str, pl.DataType] = {
    "row_id": pl.String(),
    "sample": pl.Int64(),
    "status": pl.String(),
    "error_type": pl.String(),
    "error_message": pl.String(),
    "latency_ms": pl.Float64(),
    "started_at": pl.Datetime("us", "UTC"),
    "finished_at": pl.Datetime("us", "UTC"),
    "model": pl.String(),
    "finish_reason": pl.String(),
    "prompt_tokens": pl.Int64(),
    "completion_tokens": pl.Int64(),
    "total_tokens": pl.Int64(),
    "cached_tokens": pl.Int64(),
    "reasoning_tokens": pl.Int64(),
    "cost_usd": pl.Float64(),
}


def _read_manifest(out_dir: Path) -> tuple[str | None, str | None]:
    """The job name and the request fingerprint (the spec hash) from manifest.json, if any."""
    try:
        data = orjson.loads((out_dir / "manifest.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None, None
    if not isinstance(data, dict):
        return None, None
    return data.get("job"), data.get("fingerprint")


def _labels(out_dir: Path) -> dict[str, Any] | None:
    from batchchat.api import read_results
    from batchchat.labeling import label_report, output_label_set

    label_set, _ = output_label_set(out_dir)
    if label_set is None or not (out_dir / RESULTS_DIR).is_dir():
        return None
    rows = read_results(out_dir)
    if "label" not in rows.columns:
        return None
    return label_report(rows, label_set)


def _samples_per_row(out_dir: Path) -> int:
    from batchchat.labeling import output_label_set  # it reads the job's job.yaml

    return output_label_set(out_dir)[1]


def _final_results(out_dir: Path) -> pl.LazyFrame:
    """One row per (row_id, sample) -- the ok result if there is one, else the latest -- with
    the columns the report reads (absent ones as nulls).

    Lazy: each part of the report aggregates what it needs in the streaming engine, so a
    compacted ledger (every finished run's) is never held whole. Where some key has several
    rows (an interrupted run's ledger) choosing the winners takes every key at once anyway:
    they are chosen once, into a frame the aggregations share.
    """
    if not (out_dir / RESULTS_DIR).is_dir():
        return pl.LazyFrame(schema=_COLUMNS)
    rows = scan_results(out_dir)
    have = set(rows.collect_schema().names())
    columns = rows.select(
        pl.col(name) if name in have else pl.lit(None, dtype=dtype).alias(name)
        for name, dtype in _COLUMNS.items()
    )
    return columns.collect().lazy() if has_repeated_keys(out_dir) else columns
