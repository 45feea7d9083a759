"""One run of a job: compile → plan → execute → sink → report, with resume and clean shutdown.

This module only wires the stages together; each stage lives in its own package
and knows nothing of the others. The order of events of a run:

1. compile the job (every problem at once) — nothing sent or written yet;
2. open the output directory: lock it, refuse a changed spec, learn what is done;
3. stream planned requests (done ones skipped before rendering) into the executor;
4. the executor hands each final result to the sink, which writes Parquet parts;
5. flush, compact superseded error rows, save run stats, write the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from batchchat.batchapi.cancel import check_online
from batchchat.batchapi.session import BatchJob, check_batch_api, pending_keys, run_batches
from batchchat.batchapi.state import read_state
from batchchat.cache.serve import RunCache
from batchchat.errors import SinkError
from batchchat.execute.endpoint import Target, open_target
from batchchat.execute.executor import execute
from batchchat.hooks import (
    OnResult,
    OnResults,
    budget_of,
    open_cache,
    open_endpoints,
    reasker_of,
    secrets_of,
    writing_then_caching,
)
from batchchat.job import CompiledJob, compile_job
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
from batchchat.planning.planner import RowFailure
from batchchat.planning.reader import InputIssue, count_rows
from batchchat.pricing import tier_of
from batchchat.report.build import RunReport, build_report, write_reports
from batchchat.results.encoder import ResultEncoder
from batchchat.results.ledger import ResumeIndex
from batchchat.results.outdir import OutputDir, open_output
from batchchat.results.runstats import save_input_issues, save_stats
from batchchat.results.sink import BATCH_S, ParquetSink
from batchchat.secrets import Redactor
from batchchat.spec import JobSpec

#: how often the progress display and the counters' file are brought up to date
_PROGRESS_S = 1.0
_STATS_S = 1.0


@dataclass
class RunOptions:
    """How to run a job, beyond what the spec says (the CLI flags that are not overrides)."""

    retry_failed: bool = True
    force: bool = False
    #: rehearse against the built-in simulator instead of the spec's endpoint
    dry_run: bool = False
    drain_timeout_s: float = 30.0
    #: batch mode: wait until every batch has ended (False: submit, collect what has ended,
    #: and return; ``--no-wait``)
    wait: bool = True
    #: called about once a second with the live stats (progress bars, log lines)
    on_progress: Callable[[ExecutionStats], None] | None = None
    #: told what is allowed but worth a look, once the job is compiled
    on_warning: Callable[[str], None] | None = None
    run_id: str = field(default_factory=lambda: new_run_id())


@dataclass
class RunOutcome:
    """What a run did: its report, plus what the CLI needs for the exit code."""

    report: RunReport
    stats: ExecutionStats
    output_dir: Path
    issues: list[InputIssue] = field(default_factory=list)

    @property
    def fatal_error(self) -> str | None:
        """Why the run stopped early, for people (None when it ran to the end)."""
        return self.stats.fatal_error

    @property
    def exit_code(self) -> ExitCode:
        return run_exit_code(self.stats.stop_reason, rows_failed=self.report.rows_error)


async def run_job(
    spec: JobSpec, options: RunOptions | None = None, *, stop: asyncio.Event | None = None
) -> RunOutcome:
    """Run a job to its end (or until ``stop`` is set) and return its outcome."""
    options = options or RunOptions()
    job = compile_job(spec, require_key=not options.dry_run)
    for warning in job.warnings:
        if options.on_warning is not None:
            options.on_warning(warning)
    stop = stop or asyncio.Event()
    if spec.mode == "online":  # the endpoint (or the pool) is opened once rows are planned
        with _open_output(job, options) as out:
            return await _run_in(out, job, None, options, stop)
    async with open_target(spec.endpoint, force_simulator=options.dry_run) as target:
        batch = _batch_job(job, target, options)
        # before anything is written: can this endpoint run batches?
        await check_batch_api(batch, wait=options.wait, force=options.force)
        with _open_output(job, options) as out:
            return await _run_in(out, job, batch, options, stop)


def _open_output(job: CompiledJob, options: RunOptions) -> OutputDir:
    upstream = None if job.upstream is None else job.upstream.record
    return open_output(
        job.spec.output_dir,
        job.spec,
        force=options.force,
        run_id=options.run_id,
        dry_run=options.dry_run,
        upstream=upstream,
    )


async def _run_in(
    out: OutputDir,
    job: CompiledJob,
    batch: BatchJob | None,
    options: RunOptions,
    stop: asyncio.Event,
) -> RunOutcome:
    spec = job.spec
    redact = Redactor(secrets_of(spec))
    sink = open_sink(out, job, options.run_id, redact)
    stats = ExecutionStats(run_id=options.run_id, started_at=datetime.now(UTC))
    stats.planned = count_rows(job.plan.source) * spec.samples
    issues: list[InputIssue] = []

    def on_failure(failure: RowFailure) -> None:
        stats.results_error += 1
        sink.write(unsendable_result(failure))

    index = out.completed()
    if batch is None:
        check_online(out.layout, read_state(out.layout))
    pending = pending_keys(out.layout) if batch is not None else None
    requests = _skipping(
        job, index, options.retry_failed, stats, issues.append, on_failure, pending=pending
    )
    # cached rows are answered here, before either executor: a hit is never sent, nor put
    # in a Batch API input file
    warn = options.on_warning or (lambda message: None)
    cache = open_cache(job, stats, dry_run=options.dry_run, warn=warn)
    on_result: OnResult = sink.write
    on_results: OnResults = sink.write_many
    if cache is not None:
        requests = cache.serve(requests, on_hit=sink.write)
        on_result, on_results = writing_then_caching(sink, cache)
    housekeeping = asyncio.create_task(_housekeep(out.path, sink, stats, options, cache))
    try:
        if batch is None:
            await _execute_online(job, requests, on_result, stats, redact, options, stop)
        else:
            await run_batches(
                batch,
                out.layout,
                requests,
                on_result=on_result,
                on_results=on_results,
                flush=sink.flush,
                stats=stats,
                done=index,
                wait=options.wait,
                stop=stop,
            )
    except BaseException:
        # a malformed input line, a disk that is full: the run did not complete, and
        # `status` must not say it did (what finished is saved all the same)
        stats.stop_reason = StopReason.ERROR
        stats.finished_at = datetime.now(UTC)
        raise
    finally:
        housekeeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await housekeeping
        if cache is not None:
            cache.close()
        # the planner holds the resume index (every finished key): let it go before
        # compaction and the report, which read every result again
        del requests, index
        close_results(sink, out.path, stats, issues)
    return finish_run(out, job, stats, issues)


async def _execute_online(
    job: CompiledJob,
    requests: Iterator[ChatRequest],
    on_result: OnResult,
    stats: ExecutionStats,
    redact: Redactor,
    options: RunOptions,
    stop: asyncio.Event,
) -> None:
    spec = job.spec
    warn = options.on_warning
    async with open_endpoints(job, dry_run=options.dry_run, on_warning=warn) as opened:
        route, transports = opened
        try:
            await execute(
                requests,
                limits=spec.limits,
                retry=spec.retry,
                keep_raw=spec.output.keep_raw,
                on_result=on_result,
                stats=stats,
                budget=budget_of(spec.budget, job.prices, stats),
                redact=redact,
                stop=stop,
                drain_timeout_s=options.drain_timeout_s,
                reask=reasker_of(job),
                **route,
            )
        finally:
            for transport in transports:
                await transport.aclose()
            stats.resent = sum(transport.stale_retries for transport in transports)


def _batch_job(job: CompiledJob, target: Target, options: RunOptions) -> BatchJob:
    schema = job.plan.source.schema
    keep = {name: schema[name] for name in job.spec.output.keep_columns}
    in_process = job.spec.endpoint.is_simulator or options.dry_run
    return BatchJob(job.spec, job.prices, keep, target, in_process)


def open_sink(out: OutputDir, job: CompiledJob, run_id: str, redact: Redactor) -> ParquetSink:
    """The sink of one run into ``out`` (a killed run's journals are folded first)."""
    output = job.spec.output
    return ParquetSink(
        out.results_dir,
        ResultEncoder(job.columns, run_id=run_id, redact=redact),
        part_rows=output.part_rows,
        part_seconds=output.part_seconds,
        later=_loop_call_later(),
    )


def _loop_call_later() -> Callable[[float, Callable[[], None]], object] | None:
    """The running event loop's ``call_later`` (None outside one: the sink batches by time)."""
    try:
        return asyncio.get_running_loop().call_later
    except RuntimeError:
        return None


def close_results(
    sink: ParquetSink, out_path: Path, stats: ExecutionStats, issues: list[InputIssue]
) -> None:
    """Write what is left, and the run's counters (as unfinished unless it failed: only
    :func:`finish_run` commits a finished run, once its results are compacted)."""
    try:
        sink.close()
    except BaseException:
        stats.stop_reason = StopReason.ERROR
        stats.finished_at = stats.finished_at or datetime.now(UTC)
        raise
    finally:
        with contextlib.suppress(SinkError):  # a full disk: its own error says so
            save_stats(out_path, stats)
            save_input_issues(out_path, stats.run_id, issues)


def finish_run(
    out: OutputDir, job: CompiledJob, stats: ExecutionStats, issues: list[InputIssue]
) -> RunOutcome:
    """Compact, report, then commit: until the counters say finished, ``status`` says
    partial, so a kill while compacting never leaves a directory that claims done."""
    out.compact()
    stats.finished_at = datetime.now(UTC)
    online = tier_of(job.spec.request)
    # a pool's rows were priced by the member that answered each: those costs stand
    prices = None if job.spec.endpoints is not None else job.prices
    report = build_report(out.path, prices=prices, latest=stats, online_tier=online, compacted=True)
    write_reports(out.path, report)
    save_stats(out.path, stats)
    return RunOutcome(report, stats, out.path, issues)


def _skipping(
    job: CompiledJob,
    index: ResumeIndex,
    retry_failed: bool,
    stats: ExecutionStats,
    on_issue: Callable[[InputIssue], None],
    on_failure: Callable[[RowFailure], None],
    *,
    pending: ResumeIndex | None = None,
) -> Iterator[ChatRequest]:
    """Planned requests minus the ones an earlier run finished, counting what it skips,
    and minus the ``pending`` ones (lines in the Batch API's hands)."""

    def skip(row_ids: pl.Series, sample: int) -> pl.Series:
        done = index.done(row_ids, sample, retry_failed=retry_failed)
        stats.skipped += int(done.sum())
        return done if pending is None else done | pending.done(row_ids, sample)

    return job.plan.requests(skip=skip, on_issue=on_issue, on_failure=on_failure, check_ids=False)


def unsendable_result(failure: RowFailure) -> ChatResult:
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
        row_index=failure.row_index,
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


async def _housekeep(
    out_path: Path,
    sink: ParquetSink,
    stats: ExecutionStats,
    options: RunOptions,
    cache: RunCache | None = None,
) -> None:
    """The sink's journal every few tens of ms; progress and the cache's writes each
    second; the counters (for ``status`` and the report of a killed run) every few seconds."""
    last_progress = last_stats = time.monotonic()
    while True:
        await asyncio.sleep(BATCH_S)
        sink.tick()
        now = time.monotonic()
        if now - last_progress >= _PROGRESS_S:
            if options.on_progress is not None:
                options.on_progress(stats)
            if cache is not None:
                cache.flush()
            last_progress = now
        if now - last_stats >= _STATS_S:
            with contextlib.suppress(SinkError):  # a full disk: the sink says so
                save_stats(out_path, stats)
            last_stats = now
