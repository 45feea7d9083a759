"""One run of a job: spec → plan → execute → sink → report, with resume and clean shutdown.

This module only wires the stages together; each stage lives in its own module
and knows nothing of the others. The order of events of a run:

1. check the spec against the input (every problem at once) — nothing sent yet;
2. open the output directory: lock it, refuse a changed spec, learn what is done;
3. stream planned requests (done ones skipped before rendering) into the executor;
4. the executor hands each final result to the sink, which writes Parquet parts;
5. flush, compact superseded error rows, save run stats, write the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa

from batchchat.errors import AuthenticationError, QuotaExceededError
from batchchat.execute.budget import Budget
from batchchat.execute.endpoint import open_target, resolve_headers
from batchchat.execute.executor import execute
from batchchat.execute.transport import AiohttpTransport
from batchchat.labels.columns import label_column_group
from batchchat.models import (
    ChatRequest,
    ChatResult,
    ExecutionStats,
    ExitCode,
    StopReason,
    custom_id,
    new_run_id,
    run_exit_code,
)
from batchchat.plan.planner import RowFailure, check_spec_against_input, iter_requests
from batchchat.plan.reader import InputIssue, check_unique_ids, read_schema
from batchchat.pricing import PriceTable
from batchchat.report.build import RunReport, build_report, write_reports
from batchchat.results.encoder import ResultEncoder
from batchchat.results.outdir import OutputDir, open_output
from batchchat.results.runstats import save_input_issues, save_stats
from batchchat.results.schema import ColumnGroup, result_schema
from batchchat.results.sink import ParquetSink
from batchchat.spec import JobSpec

#: errors after which sending more requests only repeats the same failure
_FATAL_ERRORS = (AuthenticationError, QuotaExceededError)
#: how often the sink's time-based flush and the stats file are brought up to date
_HOUSEKEEPING_S = 1.0


@dataclass
class RunOptions:
    """How to run a job, beyond what the spec says (the CLI flags that are not overrides)."""

    retry_failed: bool = True
    force: bool = False
    #: rehearse against the built-in simulator instead of the spec's endpoint
    dry_run: bool = False
    drain_timeout_s: float = 30.0
    #: called about once a second with the live stats (progress bars, log lines)
    on_progress: Callable[[ExecutionStats], None] | None = None
    run_id: str = field(default_factory=lambda: new_run_id())


@dataclass
class RunOutcome:
    """What a run did: its report, plus what the CLI needs for the exit code."""

    report: RunReport
    stats: ExecutionStats
    output_dir: Path
    issues: list[InputIssue] = field(default_factory=list)
    #: why the run stopped early, for people (None when it ran to the end)
    fatal_error: str | None = None

    @property
    def exit_code(self) -> ExitCode:
        return run_exit_code(self.stats.stop_reason, rows_failed=self.report.rows_error)


async def run_job(
    spec: JobSpec, options: RunOptions | None = None, *, stop: asyncio.Event | None = None
) -> RunOutcome:
    """Run a job to its end (or until ``stop`` is set) and return its outcome."""
    options = options or RunOptions()
    stop = stop or asyncio.Event()
    prepared = prepare(spec, dry_run=options.dry_run)
    with open_output(
        spec.output_dir,
        spec,
        force=options.force,
        run_id=options.run_id,
        dry_run=options.dry_run,
    ) as out:
        return await _run_in(out, spec, prepared, options, stop)


@dataclass(frozen=True)
class Prepared:
    """What a run needs before it touches the output directory, all checked."""

    prices: PriceTable
    schema: pa.Schema
    groups: list[ColumnGroup]


def prepare(spec: JobSpec, *, dry_run: bool = False) -> Prepared:
    """Every check a run can make before it opens (and so changes) its output directory.

    A spec that does not fit its input, duplicate ids, a key that is not set, a bad price
    entry, label or kept column: each fails here, with nothing written anywhere.
    """
    check_spec_against_input(spec)
    check_unique_ids(spec)
    if not (dry_run or spec.endpoint.is_simulator):
        resolve_headers(spec.endpoint)  # raises when the key's variable is not set
    prices = PriceTable.from_spec(spec)
    schema, groups = output_schema(spec, read_schema(spec))
    return Prepared(prices, schema, groups)


def output_schema(
    spec: JobSpec, input_schema: Mapping[str, pl.DataType]
) -> tuple[pa.Schema, list[ColumnGroup]]:
    """The results' Arrow schema and the extra column groups (labels) of a job.

    Raises SpecError for labels that cannot be told apart and kept columns whose names
    clash with result columns.
    """
    groups = [group for group in (label_column_group(spec),) if group is not None]
    return result_schema(spec, input_schema, extra_groups=groups), groups


async def _run_in(
    out: OutputDir,
    spec: JobSpec,
    prepared: Prepared,
    options: RunOptions,
    stop: asyncio.Event,
) -> RunOutcome:
    prices, schema, groups = prepared.prices, prepared.schema, prepared.groups
    sink = ParquetSink(
        out.results_dir,
        schema,
        ResultEncoder(spec, schema, run_id=options.run_id, extra_groups=groups),
        part_rows=spec.output.part_rows,
        part_seconds=spec.output.part_seconds,
    )
    stats = ExecutionStats(run_id=options.run_id, started_at=datetime.now(UTC))
    issues: list[InputIssue] = []
    fatal = _FatalWatch(stop)

    def on_result(result: ChatResult) -> None:
        sink.write(result)
        fatal.observe(result)

    def on_failure(failure: RowFailure) -> None:
        stats.results_error += 1
        on_result(_unsendable(failure))

    requests = _skipping(spec, out, options.retry_failed, stats, issues.append, on_failure)

    async with open_target(spec.endpoint, force_simulator=options.dry_run) as target:
        transport = AiohttpTransport(spec.endpoint, max_connections=spec.limits.max_concurrency)
        housekeeping = asyncio.create_task(_housekeep(out.path, sink, stats, options))
        try:
            await execute(
                requests,
                spec=spec,
                transport=transport,
                url=target.url,
                headers=target.headers,
                on_result=on_result,
                stats=stats,
                budget=_budget(spec, prices, stats),
                cost_of=_cost_of(prices),
                stop=stop,
                drain_timeout_s=options.drain_timeout_s,
            )
        except Exception:
            # a malformed input line, a disk that is full: the run did not complete, and
            # `status` must not say it did (what finished is saved all the same)
            stats.stop_reason = StopReason.ERROR
            raise
        finally:
            housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await housekeeping
            await transport.aclose()
            sink.close()
            stats.finished_at = datetime.now(UTC)
            if fatal.message and stats.stop_reason == StopReason.INTERRUPTED:
                stats.stop_reason = StopReason.FATAL
            save_stats(out.path, stats)
            save_input_issues(out.path, stats.run_id, issues)
            # the planner holds the resume index (every finished key): let it go before
            # compaction and the report, which read every result again
            del requests
    out.compact()
    report = build_report(out.path, prices=prices)
    write_reports(out.path, report)
    return RunOutcome(report, stats, out.path, issues, fatal.message)


def _skipping(
    spec: JobSpec,
    out: OutputDir,
    retry_failed: bool,
    stats: ExecutionStats,
    on_issue: Callable[[InputIssue], None],
    on_failure: Callable[[RowFailure], None],
) -> Iterator[ChatRequest]:
    """Planned requests minus the ones an earlier run finished, counting what it skips."""
    index = out.completed()

    def skip(row_ids: pl.Series, sample: int) -> pl.Series:
        done = index.done(row_ids, sample, retry_failed=retry_failed)
        stats.skipped += int(done.sum())
        return done

    return iter_requests(
        spec, skip=skip, on_issue=on_issue, on_failure=on_failure, ids_checked=True
    )


def _unsendable(failure: RowFailure) -> ChatResult:
    """The error row of a request its row could not be rendered into (nothing was sent).

    It is kept like any failed request: the report counts it, ``status`` shows it, and a
    re-run (after the template or the data is fixed) tries the row again.
    """
    now = datetime.now(UTC)
    request = ChatRequest(
        row_id=failure.row_id,
        sample=failure.sample,
        custom_id=custom_id(failure.row_id, failure.sample),
        body={},
        request_hash="",
        est_prompt_tokens=0,
        max_output_tokens=0,
        keep=failure.keep,
    )
    return ChatResult(
        request=request,
        response=None,
        error=failure.error,
        http_status=None,
        attempts=0,
        latency_ms=0.0,
        started_at=now,
        finished_at=now,
    )


def _budget(spec: JobSpec, prices: PriceTable, stats: ExecutionStats) -> Budget | None:
    if spec.budget is None:
        return None
    return Budget(
        spec.budget.max_cost_usd,
        worst_case=prices.worst_case_usd,
        spent=lambda: stats.cost_usd,
    )


def _cost_of(prices: PriceTable) -> Callable[[ChatResult], float | None]:
    def cost_of(result: ChatResult) -> float | None:
        response = result.response
        if response is None:
            return None
        model = response.model or result.request.body.get("model")
        return prices.cost_usd(model, response.usage)

    return cost_of


class _FatalWatch:
    """Stops the run at the first error that every other request would repeat (bad key, no
    quota): a wrong key must not turn a million rows into a million error rows."""

    def __init__(self, stop: asyncio.Event) -> None:
        self._stop = stop
        self.message: str | None = None

    def observe(self, result: ChatResult) -> None:
        if self.message is None and isinstance(result.error, _FATAL_ERRORS):
            self.message = f"{type(result.error).__name__}: {result.error}"
            self._stop.set()


async def _housekeep(
    out_path: Path, sink: ParquetSink, stats: ExecutionStats, options: RunOptions
) -> None:
    """Once a second: time-based part flush, stats file for `status`/`report`, progress."""
    last_stats = time.monotonic()
    while True:
        await asyncio.sleep(_HOUSEKEEPING_S)
        sink.flush_if_due()
        if options.on_progress is not None:
            options.on_progress(stats)
        if time.monotonic() - last_stats >= 5 * _HOUSEKEEPING_S:
            save_stats(out_path, stats)
            last_stats = time.monotonic()
