"""A run on Ray: the driver's side of ``batchchat run --engine ray``.

The order of events mirrors a local run's (:mod:`batchchat.runner`), and uses its parts:

1. compile the job (every problem at once) -- nothing sent or written yet;
2. open the output directory: lock it, refuse a changed spec, learn what is done;
3. start (or join) Ray; count each input file's rows, so every row gets its position;
4. start the run's coordinator (its one rate limit) and its writer (its one sink);
5. read the input with Ray tasks and send it through a pool of worker actors
   (``map_batches``), each running the local run's planner and executor; the driver
   sums the workers' counters as their batches come back, for progress and the report;
6. close the writer, save the run's counters, then compact and report as a local run.
"""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import ray
import ray.data

from batchchat.cluster import RayOptions
from batchchat.cluster.actors import RowSender, start_coordinator, start_writer
from batchchat.cluster.input import InputRows
from batchchat.cluster.limits import Watch
from batchchat.cluster.session import check_address, cluster_cpus, ray_session
from batchchat.cluster.worker import WorkerSetup, error_message, worker_setup
from batchchat.errors import (
    BatchchatError,
    ClusterError,
    DiskFullError,
    InputError,
    SinkError,
    SpecError,
    TemplateError,
)
from batchchat.execute.endpoint import open_target, secret_values
from batchchat.job import CompiledJob, compile_job
from batchchat.models import ExecutionStats, StopReason, TimelineBucket
from batchchat.planning.reader import InputIssue, file_row_counts
from batchchat.results.outdir import OutputDir, open_output
from batchchat.results.runstats import save_input_issues, save_stats, stats_from_dict
from batchchat.runner import RunOptions, RunOutcome, finish_run
from batchchat.spec import JobSpec

#: CPUs each worker reserves: it waits on the network, so two share a core, and Ray's read
#: tasks (1 CPU each) still find room beside them
WORKER_CPUS = 0.5
#: rows handed to a worker at a time: enough to keep its executor busy across batches
BATCH_ROWS_PER_SLOT = 4
MIN_BATCH_ROWS, MAX_BATCH_ROWS = 64, 2048
#: batches in a piece of the input (one Ray task). Ray runs a worker's tasks one after
#: another, and up to 4 batches of one task at once; a task ends when its last answer is
#: written, and the worker's executor runs dry meanwhile, so a task holds several batches
PIECE_BATCHES = 8
#: tasks given to a worker ahead of the one it runs (its next task is there when it ends;
#: more would let the first worker started take the first tasks of the input all to itself)
TASKS_AHEAD = 2
#: how often progress is shown and the counters saved
_PROGRESS_S = 1.0

#: errors a worker may stop a run with, by name: raised again here, as a local run raises them
_RAISED: dict[str, type[BatchchatError]] = {
    cls.__name__: cls for cls in (InputError, TemplateError, SinkError, DiskFullError, SpecError)
}


async def run_on_ray(
    spec: JobSpec,
    options: RunOptions | None = None,
    ray_options: RayOptions | None = None,
    *,
    stop: asyncio.Event | None = None,
) -> RunOutcome:
    """Run a job on Ray to its end (or until ``stop`` is set) and return its outcome."""
    options = options or RunOptions()
    job = compile_job(spec, require_key=not options.dry_run)
    refuse_unsupported(job)
    check_address(ray_options or RayOptions())
    for warning in job.warnings:
        if options.on_warning is not None:
            options.on_warning(warning)
    with (
        open_output(
            spec.output_dir,
            spec,
            force=options.force,
            run_id=options.run_id,
            dry_run=options.dry_run,
        ) as out,
        ray_session(ray_options or RayOptions()),
    ):
        return await _run_in(out, job, options, ray_options or RayOptions(), stop)


async def _run_in(
    out: OutputDir,
    job: CompiledJob,
    options: RunOptions,
    ray_options: RayOptions,
    stop: asyncio.Event | None,
) -> RunOutcome:
    spec, source = job.spec, job.plan.source
    stats = ExecutionStats(run_id=options.run_id, started_at=datetime.now(UTC))
    issues: list[InputIssue] = []
    counts = file_row_counts(source, on_issue=issues.append)
    rows = sum(counts) if spec.input.limit is None else min(sum(counts), spec.input.limit)
    stats.planned = rows * spec.samples
    workers = ray_options.workers or cluster_cpus()
    secrets = secret_values(spec.endpoint)
    async with open_target(spec.endpoint, force_simulator=options.dry_run) as target:
        setup = WorkerSetup(
            spec=spec,
            source=source,
            run_id=options.run_id,
            target=target,
            secrets=secrets,
            concurrency=spec.limits.max_concurrency,
            done=out.completed(),
            retry_failed=options.retry_failed,
            drain_timeout_s=options.drain_timeout_s,
        )
        setup = worker_setup(setup, workers)
        coordinator = start_coordinator(options.run_id)
        writer = start_writer(out.results_dir, spec, source, run_id=options.run_id, secrets=secrets)
        tally = Tally(stats)
        try:
            rows_in = InputRows(
                source,
                counts,
                workers=workers,
                min_rows=PIECE_BATCHES * batch_rows(setup.concurrency),
            )
            dataset = _pipeline(rows_in, setup, workers, coordinator, writer)
            await _send_all(dataset, tally, coordinator, options, stop, out.path)
            state: Watch = await coordinator.state.remote()
            _take_stop_reason(stats, state)
        except BaseException:
            # an error here (not a worker's: theirs are counted) means the run did not
            # complete, and `status` must not say it did (what finished is saved all the same)
            stats.stop_reason = StopReason.ERROR
            stats.finished_at = datetime.now(UTC)
            raise
        finally:
            await _close(writer, out, stats, issues)
            for actor in (coordinator, writer):
                ray.kill(actor)
    _raise_worker_error(state)
    return finish_run(out, job, stats, issues)


def refuse_unsupported(job: CompiledJob) -> None:
    """A SpecError (exit 2, nothing sent) for what a run on Ray does not do (yet): each
    says what to do instead."""
    problems = []
    if job.spec.cache is not None:
        problems.append(
            "  cache: the response cache is one SQLite file on one machine, and Ray's "
            "workers may be on others; run the job without --engine ray to use it, or "
            "leave cache: out"
        )
    if job.spec.mode == "batch":
        problems.append(
            "  mode: batch: the Batch API runs the job on the provider's side, and Ray's "
            "workers would have nothing to send; run it without --engine ray"
        )
    if job.spec.endpoints is not None:
        problems.append(
            "  endpoints: a pool of endpoints is routed by one process (each member's "
            "admission, cool-downs and fail-over live there); run the job without "
            "--engine ray, or give it one endpoint:"
        )
    if job.upstream is not None:
        problems.append(
            "  input.path: an output directory as input (chaining) is read by a local run "
            "only; run this stage without --engine ray, or export the upstream results to "
            "Parquet (batchchat export) and read that file"
        )
    if problems:
        raise SpecError("this job cannot run on Ray (--engine ray):", problems)


def _pipeline(
    rows: InputRows, setup: WorkerSetup, workers: int, coordinator: Any, writer: Any
) -> ray.data.Dataset:
    """The input read by Ray tasks, through a pool of ``workers`` worker actors."""
    with warnings.catch_warnings():
        # deprecated from Ray 2.60 with no replacement yet for max_restarts (the extra
        # pins ray below 2.64, where it goes)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        size = batch_rows(setup.concurrency)
        dataset: ray.data.Dataset = ray.data.read_datasource(rows).map_batches(
            RowSender,
            fn_constructor_args=(setup, coordinator, writer),
            compute=ray.data.ActorPoolStrategy(
                size=workers, max_tasks_in_flight_per_actor=TASKS_AHEAD
            ),
            batch_size=size,
            batch_format="pyarrow",
            num_cpus=WORKER_CPUS,
            ray_remote_args_fn=_never_restarted,
        )
    return dataset


async def _send_all(
    dataset: ray.data.Dataset,
    tally: Tally,
    coordinator: Any,
    options: RunOptions,
    stop: asyncio.Event | None,
    out_path: Path,
) -> None:
    """Consume the dataset (on a thread: the simulator of a dry run shares this loop),
    showing progress and saving the counters, and tell the workers to stop when ``stop``
    is set."""
    watching = asyncio.create_task(_watch(stop, coordinator)) if stop is not None else None
    showing = asyncio.create_task(_housekeep(tally, coordinator, options.on_progress, out_path))
    try:
        await asyncio.to_thread(_consume, dataset, tally)
    except ray.exceptions.RayError as error:
        raise ClusterError(
            f"Ray could not finish the run: {error_message(error)}. What was written is kept: "
            "run the job again to send the rest."
        ) from None
    finally:
        for task in (watching, showing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def _consume(dataset: ray.data.Dataset, tally: Tally) -> None:
    for summary in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        assert isinstance(summary, pa.Table)
        for worker, counters in zip(
            summary.column("worker").to_pylist(), summary.column("stats").to_pylist(), strict=True
        ):
            tally.update(worker, orjson.loads(counters))


async def _watch(stop: asyncio.Event, coordinator: Any) -> None:
    await stop.wait()
    coordinator.stop.remote(str(StopReason.INTERRUPTED))


async def _housekeep(
    tally: Tally,
    coordinator: Any,
    on_progress: Callable[[ExecutionStats], None] | None,
    out_path: Path,
) -> None:
    """Progress, and the counters saved (for ``status`` while the run goes on, and the
    report of a killed run), every second, as a local run does."""
    while True:
        await asyncio.sleep(_PROGRESS_S)
        latest: dict[str, bytes] = await coordinator.latest_counters.remote()
        for worker, counters in latest.items():
            tally.update(worker, orjson.loads(counters))
        if on_progress is not None:
            on_progress(tally.stats)
        with contextlib.suppress(SinkError):  # a full disk: the writer says so
            save_stats(out_path, tally.stats)


async def _close(writer: Any, out: OutputDir, stats: ExecutionStats, issues: list[Any]) -> None:
    """Write what the writer holds, and the run's counters (as unfinished: only
    :func:`~batchchat.runner.finish_run` commits a finished run)."""
    try:
        await writer.close.remote()
    except Exception as error:
        stats.stop_reason = StopReason.ERROR
        stats.finished_at = stats.finished_at or datetime.now(UTC)
        cause = getattr(error, "cause", None)
        raise (cause if isinstance(cause, SinkError) else error) from None
    finally:
        with contextlib.suppress(SinkError):  # a full disk: its own error says so
            save_stats(out.path, stats)
            save_input_issues(out.path, stats.run_id, issues)


def _take_stop_reason(stats: ExecutionStats, state: Watch) -> None:
    """Why the run ended: what the coordinator heard first (nothing: it completed)."""
    if state.stop is not None:
        stats.stop_reason = StopReason(state.stop)
    if stats.stop_reason is StopReason.FATAL:
        stats.fatal_error = state.message


def _raise_worker_error(state: Watch) -> None:
    """The error a worker stopped the run with, raised as a local run raises it."""
    if state.stop != StopReason.ERROR:
        return
    raised = _RAISED.get(state.error or "")
    if raised is None:
        raise RuntimeError(f"a worker of the run failed: {state.message}")
    raise raised(state.message or "a worker of the run failed")


def _never_restarted() -> dict[str, Any]:
    """A lost worker ends the run rather than coming back to send its batches again: the
    answers it had written would be paid twice. A re-run resumes instead."""
    return {"max_restarts": 0}


def batch_rows(concurrency: int) -> int:
    """Rows per batch for a worker allowed ``concurrency`` requests in flight."""
    return max(MIN_BATCH_ROWS, min(MAX_BATCH_ROWS, concurrency * BATCH_ROWS_PER_SLOT))


@dataclass
class Tally:
    """The run's counters: the sum of each worker's latest."""

    stats: ExecutionStats
    #: each worker's latest counters, by name
    latest: dict[str, ExecutionStats] = field(default_factory=dict)

    def update(self, worker: str, counters: dict[str, Any]) -> None:
        """A worker's counters, unless older than what is known of it (they come two
        ways: with each batch, and from the coordinator, and only ever grow)."""
        news, known = stats_from_dict(counters), self.latest.get(worker)
        if known is None or _progress(news) >= _progress(known):
            self.latest[worker] = news
            self._sum()

    def _sum(self) -> None:
        stats, workers = self.stats, list(self.latest.values())
        for name in _SUMMED:
            setattr(stats, name, sum(getattr(one, name) for one in workers))
        stats.status_counts = {}
        for one in workers:
            for status, count in one.status_counts.items():
                stats.status_counts[status] = stats.status_counts.get(status, 0) + count
        stats.timeline = _merged_timeline(stats.started_at, workers)


def _progress(stats: ExecutionStats) -> tuple[int, int, int]:
    return (stats.requests_sent, stats.results_ok + stats.results_error, stats.skipped)


_SUMMED = (
    "requests_sent",
    "retries",
    "resent",
    "rate_limited",
    "results_ok",
    "results_error",
    "skipped",
    "in_flight",
    "concurrency",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
)


def _merged_timeline(began: datetime, workers: list[ExecutionStats]) -> list[TimelineBucket]:
    """The workers' per-second timelines on the run's clock (each began on its own)."""
    merged: list[TimelineBucket] = []
    for one in workers:
        shift = max(0, int((one.started_at - began).total_seconds()))
        for bucket in one.timeline:
            second = bucket.second + shift
            while len(merged) <= second:
                merged.append(TimelineBucket(second=len(merged)))
            into = merged[second]
            into.requests += bucket.requests
            into.rate_limited += bucket.rate_limited
            into.ok += bucket.ok
            into.errors += bucket.errors
            into.tokens += bucket.tokens
    return merged
