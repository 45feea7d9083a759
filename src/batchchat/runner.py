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
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from batchchat.cache.serve import RunCache
from batchchat.errors import SinkError
from batchchat.execute.budget import Budget
from batchchat.execute.endpoint import open_target, secret_values
from batchchat.execute.executor import execute
from batchchat.execute.pool import PoolSettings, open_pool
from batchchat.execute.reask import Reasker
from batchchat.execute.transport import AiohttpTransport
from batchchat.job import CompiledJob, compile_job
from batchchat.models import (
    ChatRequest,
    ChatResponse,
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
from batchchat.pricing import PoolPriceTable, PriceTable
from batchchat.report.build import RunReport, build_report, write_reports
from batchchat.results.encoder import ResultEncoder
from batchchat.results.outdir import OutputDir, open_output
from batchchat.results.runstats import save_input_issues, save_stats
from batchchat.results.sink import BATCH_S, ParquetSink
from batchchat.secrets import Redactor
from batchchat.spec import BudgetSpec, JobSpec

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
    upstream = None if job.upstream is None else job.upstream.record
    with open_output(
        spec.output_dir,
        job.spec,
        force=options.force,
        run_id=options.run_id,
        dry_run=options.dry_run,
        upstream=upstream,
    ) as out:
        return await _run_in(out, job, options, stop or asyncio.Event())


async def _run_in(
    out: OutputDir, job: CompiledJob, options: RunOptions, stop: asyncio.Event
) -> RunOutcome:
    spec = job.spec
    redact = Redactor(_secrets(spec))
    sink = ParquetSink(
        out.results_dir,
        ResultEncoder(job.columns, run_id=options.run_id, redact=redact),
        part_rows=spec.output.part_rows,
        part_seconds=spec.output.part_seconds,
    )
    stats = ExecutionStats(run_id=options.run_id, started_at=datetime.now(UTC))
    stats.planned = count_rows(job.plan.source) * spec.samples
    issues: list[InputIssue] = []

    def on_failure(failure: RowFailure) -> None:
        stats.results_error += 1
        sink.write(unsendable_result(failure))

    requests = _skipping(job, out, options.retry_failed, stats, issues.append, on_failure)
    cache = _open_cache(job, stats, options)
    on_result: Callable[[ChatResult], None] = sink.write
    if cache is not None:
        requests = cache.serve(requests, on_hit=sink.write)
        on_result = _writing_then_caching(sink, cache)

    async with _endpoints(job, options) as (route, transports):
        housekeeping = asyncio.create_task(_housekeep(out.path, sink, stats, options, cache))
        try:
            await execute(
                requests,
                limits=spec.limits,
                retry=spec.retry,
                keep_raw=spec.output.keep_raw,
                on_result=on_result,
                stats=stats,
                budget=_budget(spec.budget, job.prices, stats),
                redact=redact,
                stop=stop,
                drain_timeout_s=options.drain_timeout_s,
                reask=reasker_of(job),
                **route,
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
            for transport in transports:
                await transport.aclose()
            if cache is not None:
                cache.close()
            stats.resent = sum(transport.stale_retries for transport in transports)
            # the planner holds the resume index (every finished key): let it go before
            # compaction and the report, which read every result again
            del requests
            _close(sink, out.path, stats, issues)
    return finish_run(out, job, stats, issues)


@contextlib.asynccontextmanager
async def _endpoints(
    job: CompiledJob, options: RunOptions
) -> AsyncIterator[tuple[dict[str, Any], list[AiohttpTransport]]]:
    """Where the requests go, as :func:`execute` takes it -- the one endpoint, or the pool
    -- opened (simulators started), with the transports to close at the end."""
    spec = job.spec
    if spec.endpoints is None:
        async with open_target(spec.endpoint, force_simulator=options.dry_run) as target:
            transport = AiohttpTransport(spec.endpoint, max_connections=spec.limits.max_concurrency)
            route = {
                "transport": transport,
                "url": target.url,
                "headers": target.headers,
                "endpoint": target.display,
                "cost_of": cost_function(job.prices),
            }
            yield route, [transport]
        return
    members = job.prices.members if isinstance(job.prices, PoolPriceTable) else []
    costs = {prices.member.name: prices.answer_cost for prices in members}
    async with open_pool(
        spec.endpoints,
        limits=spec.limits,
        prices=lambda member: costs.get(member.name),
        force_simulator=options.dry_run,
    ) as opened:
        pool = PoolSettings(opened, spec.routing, on_warning=options.on_warning)
        transports = [m.transport for m in opened if isinstance(m.transport, AiohttpTransport)]
        yield {"pool": pool, "endpoint": "the pool"}, transports


def _secrets(spec: JobSpec) -> frozenset[str]:
    """Every secret a run sends, to be masked wherever it could show."""
    if spec.endpoints is None:
        return secret_values(spec.endpoint)
    return frozenset().union(*(secret_values(member) for member in spec.endpoints))


def _close(
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
    # a pool's rows were priced by the member that answered each: those costs stand
    prices = None if job.spec.endpoints is not None else job.prices
    report = build_report(out.path, prices=prices, latest=stats)
    write_reports(out.path, report)
    save_stats(out.path, stats)
    return RunOutcome(report, stats, out.path, issues)


def _skipping(
    job: CompiledJob,
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


def _budget(spec: BudgetSpec | None, prices: PriceTable, stats: ExecutionStats) -> Budget | None:
    if spec is None:
        return None
    return Budget(
        spec.max_cost_usd,
        worst_case=prices.worst_case_usd,
        spent=lambda: stats.cost_usd,
    )


def _open_cache(job: CompiledJob, stats: ExecutionStats, options: RunOptions) -> RunCache | None:
    """The response cache of the job (None: it has none, or this is a rehearsal, whose
    simulated answers must neither be stored for nor served to the real endpoint)."""
    directory, spec = job.spec.cache_dir, job.spec.cache
    if directory is None or spec is None:
        return None
    warn = options.on_warning or (lambda message: None)
    if options.dry_run:
        warn("cache: not used by a --dry-run (simulated answers are not the endpoint's)")
        return None
    reask = job.spec.output.reask
    return RunCache(
        spec,
        directory,
        stats,
        price=cost_function(job.prices),
        check=job.check,
        reasks=0 if reask is None else reask.count,
        keep_raw=job.spec.output.keep_raw,
        on_warning=warn,
    )


def _writing_then_caching(sink: ParquetSink, cache: RunCache) -> Callable[[ChatResult], None]:
    def on_result(result: ChatResult) -> None:
        sink.write(result)  # the output directory first: the cache is only a saving
        cache.offer(result)

    return on_result


def reasker_of(job: CompiledJob) -> Reasker | None:
    """The job's re-asks of answers that fail its check (None: it has none)."""
    reask = job.spec.output.reask
    if reask is None or reask.count == 0 or job.check is None:
        return None
    prices = job.prices

    def price(request: ChatRequest, response: ChatResponse) -> float | None:
        return prices.cost_usd(response.model or request.body.get("model"), response.usage)

    return Reasker(reask, job.check, price)


def cost_function(prices: PriceTable) -> Callable[[ChatResult], float | None]:
    """What a result cost, by ``prices`` (None: unpriced, or no answer)."""

    def cost_of(result: ChatResult) -> float | None:
        response = result.response
        if response is None:
            return None
        model = response.model or result.request.body.get("model")
        return prices.cost_usd(model, response.usage)

    return cost_of


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
