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
from pathlib import Path
from typing import Any

import polars as pl

from batchchat.batchapi.state import read_state, summarize
from batchchat.errors import BatchchatError, ResumeError
from batchchat.labels.columns import output_label_set, read_label_report
from batchchat.models import ExecutionStats
from batchchat.pricing import STANDARD, PriceTable, Tier
from batchchat.report.asks import cache_summary, parse_statuses, reask_summary
from batchchat.report.endpoints import endpoint_reports
from batchchat.report.html import render_html
from batchchat.report.model import RunReport
from batchchat.report.stats import (
    count_requests,
    count_rows,
    error_groups,
    finish_reasons,
    latency_summary,
    model_costs,
    online_cost,
    sum_tokens,
    timeline,
)
from batchchat.report.text import render_markdown
from batchchat.results.layout import OutputLayout, write_atomically
from batchchat.results.ledger import scan_results
from batchchat.results.outdir import read_manifest
from batchchat.results.runstats import load_input_issues, load_stats
from batchchat.spec import load_spec

__all__ = ["RunReport", "build_report", "write_reports"]


# -- building ----------------------------------------------------------------------------------


def build_report(
    out_dir: Path,
    *,
    prices: PriceTable | None = None,
    latest: ExecutionStats | None = None,
    online_tier: Tier = STANDARD,
    compacted: bool = False,
) -> RunReport:
    """The report of an output directory (finished, partial or interrupted).

    Without ``prices`` the cost is the ``cost_usd`` stored with each result; with them,
    every row is priced again from its token counts (rows a batch answered at batch prices,
    the others at ``online_tier``). ``latest``: the counters of the run that is finishing,
    newer than its saved file. ``compacted``: the ledger was compacted just now (by the
    caller, under the directory's lock), so no key repeats and that is not checked again.
    """
    out_dir = Path(out_dir)
    job, spec_hash = _read_manifest(out_dir)
    runs = load_stats(out_dir)
    if latest is not None:
        runs = [run for run in runs if run.run_id != latest.run_id] + [latest]
    rows = _final_results(out_dir, compacted=compacted)
    report = RunReport(
        output_dir=str(out_dir),
        job=job,
        batchchat_version=_version(),
        spec_hash=spec_hash,
    )
    count_rows(report, rows)
    count_requests(report, runs)
    models, warnings = model_costs(rows, prices, online_tier)
    report.models = models
    report.tokens = sum_tokens(m.tokens for m in models)
    report.cost_usd = math.fsum(m.cost_usd or 0.0 for m in models)
    report.cost_complete = not any(m.unpriced_rows for m in models)
    report.warnings = warnings
    reference = prices or _job_prices(out_dir)
    if reference is not None:
        report.cost_online_usd = online_cost(rows, reference, online_tier)
    report.batches = batch_summary(OutputLayout(out_dir))
    report.finish_reasons = finish_reasons(rows)
    report.errors = error_groups(rows)
    report.latency = latency_summary(rows)
    report.cache = cache_summary(rows)
    report.reasks = reask_summary(rows)
    report.parse_status = parse_statuses(rows)
    if report.wall_time_s > 0:
        report.rows_per_s = report.rows_total / report.wall_time_s
        report.tokens_per_s = report.tokens.total / report.wall_time_s
    report.timeline = timeline(runs)
    label_set, report.samples = output_label_set(out_dir)  # from the job's job.yaml
    if label_set is not None and OutputLayout(out_dir).results.is_dir():
        report.labels = read_label_report(out_dir, label_set, samples=report.samples)
    report.endpoints = endpoint_reports(rows, runs)
    report.warnings += [
        f"endpoint {e.name} was out of the pool: {e.removed}" for e in report.endpoints if e.removed
    ]
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
    layout = OutputLayout(out_dir)
    write_atomically(layout.report("json"), report.to_json() + b"\n")
    write_atomically(layout.report("md"), render_markdown(report).encode("utf-8"))
    write_atomically(layout.report("html"), render_html(report).encode("utf-8"))


def _version() -> str:
    try:
        return importlib.metadata.version("batchchat")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


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
    "batch_id": pl.String(),
    "model": pl.String(),
    "finish_reason": pl.String(),
    "prompt_tokens": pl.Int64(),
    "completion_tokens": pl.Int64(),
    "total_tokens": pl.Int64(),
    "cached_tokens": pl.Int64(),
    "reasoning_tokens": pl.Int64(),
    "cost_usd": pl.Float64(),
    "endpoint": pl.String(),
    "reasks": pl.Int64(),
    "ask_costs_usd": pl.List(pl.Float64()),
    "cached": pl.Boolean(),
    "cost_saved_usd": pl.Float64(),
    "parse_status": pl.String(),
}


def _job_prices(out_dir: Path) -> PriceTable | None:
    """The price table of the job that wrote ``out_dir`` (its job.yaml), if it can be read."""
    try:
        return PriceTable.from_spec(load_spec(OutputLayout(out_dir).job_yaml))
    except (BatchchatError, ValueError):
        return None


def batch_summary(layout: OutputLayout) -> dict[str, Any] | None:
    """Batch mode's counts (batches by status, lines, resubmissions), if it ran here."""
    try:
        state = read_state(layout)
    except BatchchatError:
        return None
    return None if state is None else summarize(state)


def _read_manifest(out_dir: Path) -> tuple[str | None, str | None]:
    """The job name and the request fingerprint (the spec hash) from manifest.json, if any."""
    try:
        data = read_manifest(out_dir)
    except ResumeError:
        return None, None  # the report of a damaged directory still shows its results
    if data is None:
        return None, None
    return data.get("job"), data.get("fingerprint")


def _final_results(out_dir: Path, *, compacted: bool = False) -> pl.LazyFrame:
    """One row per (row_id, sample) -- the ok result if there is one, else the latest -- with
    the columns the report reads (absent ones as nulls).

    Lazy: each part of the report aggregates what it needs in the streaming engine, so the
    ledger is never held whole, compacted or not (the rows that lose to another row of
    their key are found first, in memory bounded by how many keys repeat).
    """
    if not OutputLayout(out_dir).results.is_dir():
        return pl.LazyFrame(schema=_COLUMNS)
    rows = scan_results(out_dir, keys_repeat=False if compacted else None)
    have = set(rows.collect_schema().names())
    return rows.select(
        pl.col(name) if name in have else pl.lit(None, dtype=dtype).alias(name)
        for name, dtype in _COLUMNS.items()
    )
