"""The run report's values: :class:`RunReport` and its parts, and their stable JSON form.

Plain data; how it is computed from an output directory is :mod:`batchchat.report.build`
(with the aggregations in :mod:`batchchat.report.stats`), how it is shown is
:mod:`batchchat.report.text` and :mod:`batchchat.report.html`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import orjson

from batchchat.report.endpoints import EndpointReport
from batchchat.report.text import render_markdown

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
    #: what the same rows would have cost at online (standard) prices, when some were
    #: billed at batch or flex prices (None otherwise, or without prices)
    cost_online_usd: float | None = None
    #: batch mode: batches by status, lines, resubmissions (None: no batch ran here)
    batches: dict[str, Any] | None = None
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
    #: per endpoint of a pool (empty for a job with one endpoint)
    endpoints: list[EndpointReport] = field(default_factory=list)
    #: rows served from the response cache and what they saved (None: none was)
    cache: dict[str, Any] | None = None
    #: rows asked again, re-asks, their cost and how the rows ended (None: none was)
    reasks: dict[str, Any] | None = None
    #: ok rows by ``parse_status`` (jobs that check their answers)
    parse_status: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The stable, JSON-ready form (``report.json``)."""
        data = {
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
                **self._online_cost(),
            },
            "batches": self.batches,
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
            "cache": self.cache,
            "reasks": self.reasks,
            "parse_status": dict(self.parse_status),
        }
        if self.endpoints:  # a pool job's: by name, in the spec's order
            data["endpoints"] = {e.name: _without(asdict(e), "name") for e in self.endpoints}
        return data

    def _online_cost(self) -> dict[str, float]:
        if self.cost_online_usd is None:
            return {}
        online = round(self.cost_online_usd, 10)
        return {"online_usd": online, "saving_usd": round(online - self.cost_usd, 10)}

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


# -- serialization helpers ---------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _model_dict(model: ModelCost) -> dict[str, Any]:
    data = _without(asdict(model), "model")
    data["cost_usd"] = None if model.cost_usd is None else round(model.cost_usd, 10)
    return data


def _without(data: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != key}
