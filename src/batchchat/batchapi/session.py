"""Batch mode as the runner meets it: check the endpoint, run the batches, cancel them.

The runner owns the output directory, the sink and the report; these functions take the
pieces of a compiled job they need and do the batch-specific rest: the capability probe
(before anything is written), the Batch API client on its own transport, the state, and
the executor or the cancellation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

from batchchat.batchapi.cancel import Cancelled, cancel_batches
from batchchat.batchapi.client import BatchClient
from batchchat.batchapi.collect import BatchRun
from batchchat.batchapi.executor import execute_batches
from batchchat.batchapi.state import BatchState, load_state, pending_index, read_state
from batchchat.errors import BatchLineInvalid, ResumeError, SpecError
from batchchat.execute.endpoint import Target, secret_values
from batchchat.execute.transport import AiohttpTransport
from batchchat.models import ChatRequest, ChatResult, ExecutionStats, StopReason
from batchchat.pricing import PriceTable
from batchchat.results.layout import OutputLayout
from batchchat.results.ledger import ResumeIndex
from batchchat.secrets import Redactor
from batchchat.spec import JobSpec, SimulatorSpec

#: Batch API calls in flight at once (they are few and big)
_CONNECTIONS = 4


@dataclass
class BatchJob:
    """What batch mode needs of a compiled job and its run."""

    spec: JobSpec
    prices: PriceTable
    #: the kept input columns and their types
    keep_types: Mapping[str, pl.DataType]
    target: Target
    #: the built-in simulator runs in this process (its batches end with it)
    in_process: bool


def pace_of(job: BatchJob) -> float:
    """How fast the provider's time runs: the in-process simulator's ``time_scale``, else 1."""
    if not job.in_process:
        return 1.0
    return (job.spec.endpoint.simulator or SimulatorSpec()).batch.time_scale


@asynccontextmanager
async def batch_client(job: BatchJob) -> AsyncIterator[BatchClient]:
    """A Batch API client on its own transport, with ``batch.http_timeout_s`` per call."""
    spec = job.spec
    endpoint = spec.endpoint.model_copy(update={"timeout_s": spec.batch.http_timeout_s})
    transport = AiohttpTransport(endpoint, max_connections=_CONNECTIONS)
    target = job.target
    redact = Redactor(secret_values(spec.endpoint))
    try:
        yield BatchClient(
            transport,
            target.url,
            target.headers,
            retry=spec.retry,
            display=target.display,
            redact=redact,
        )
    finally:
        await transport.aclose()


async def check_batch_api(job: BatchJob, *, wait: bool, force: bool) -> None:
    """Before the output directory is opened: can this run go through the Batch API?

    ``--no-wait`` needs a provider that outlives this process; ``--force`` must not lose
    batches that are running; and the endpoint must have a Batch API (probed with one
    ``GET /batches``, which creates nothing).
    """
    if not wait and job.in_process:
        raise SpecError(
            "--no-wait needs a Batch API that outlives this process, and the built-in "
            "simulator stops with it: start one with `batchchat simulate --port 8080` and set "
            "endpoint.base_url: http://127.0.0.1:8080/v1, or run without --no-wait"
        )
    layout = OutputLayout(job.spec.output_dir)
    state = read_state(layout) if layout.batches.is_dir() else None
    if force and state is not None and any(s.at_provider for s in state.live()):
        raise ResumeError(
            f"{layout.root} has batches at the Batch API; --force would lose track of them "
            f"(and of what they cost). Cancel them first with `batchchat cancel {layout.root}`, "
            "or let a run of the job collect them."
        )
    async with batch_client(job) as client:
        await client.probe()


def pending_keys(layout: OutputLayout) -> ResumeIndex:
    """The keys of the lines in the Batch API's hands: planned once, never twice."""
    state = read_state(layout)
    return ResumeIndex.empty() if state is None else pending_index(layout, state.live())


async def run_batches(
    job: BatchJob,
    layout: OutputLayout,
    requests: Iterable[ChatRequest],
    *,
    on_result: Callable[[ChatResult], None],
    flush: Callable[[], None],
    stats: ExecutionStats,
    done: ResumeIndex,
    wait: bool,
    stop: asyncio.Event,
    on_results: Callable[[list[ChatResult]], None] | None = None,
) -> StopReason:
    """Run ``requests`` through the Batch API into ``on_result``; why it stopped (the
    reason is also in ``stats``, with ``fatal_error`` when a batch was refused whole)."""
    spec = job.spec
    state = load_state(layout)
    if job.in_process:
        _forget_the_provider(state)
    async with batch_client(job) as client:
        run = _batch_run(job, layout, state, client, on_result, flush, stats, done)
        run.on_results = on_results
        budget = spec.budget.max_cost_usd if spec.budget is not None else None

        def on_oversize(request: ChatRequest, why: str) -> None:
            on_result(_unsendable(request, why))
            stats.results_error += 1

        reason = await execute_batches(
            run,
            requests,
            on_oversize=on_oversize,
            wait=wait,
            stop=stop,
            retry=spec.retry,
            budget_usd=budget,
        )
    stats.stop_reason = reason
    stats.fatal_error = run.fatal
    return reason


async def cancel_job_batches(
    job: BatchJob,
    layout: OutputLayout,
    *,
    on_result: Callable[[ChatResult], None],
    flush: Callable[[], None],
    stats: ExecutionStats,
    wait: bool,
    stop: asyncio.Event,
    on_results: Callable[[list[ChatResult]], None] | None = None,
) -> Cancelled:
    """Cancel the job's batches (see :mod:`batchchat.batchapi.cancel`)."""
    state = load_state(layout)
    async with batch_client(job) as client:
        run = _batch_run(job, layout, state, client, on_result, flush, stats, ResumeIndex.empty())
        run.on_results = on_results
        return await cancel_batches(run, wait=wait, stop=stop)


def _batch_run(
    job: BatchJob,
    layout: OutputLayout,
    state: BatchState,
    client: BatchClient,
    on_result: Callable[[ChatResult], None],
    flush: Callable[[], None],
    stats: ExecutionStats,
    done: ResumeIndex,
) -> BatchRun:
    spec = job.spec
    return BatchRun(
        layout,
        state,
        spec.batch,
        client,
        job.prices,
        job.keep_types,
        spec.output.keep_raw,
        on_result,
        flush,
        stats,
        done=done,
        job=spec.name,
        pace=pace_of(job),
    )


def _forget_the_provider(state: BatchState) -> None:
    """The in-process simulator of an earlier run ended with it, and its files and batches
    with it: shards it held go back to be sent again (it was never paid)."""
    for shard in state.live():
        if shard.phase != "planned":
            if shard.batch_id is not None:
                shard.history.append(shard.batch_id)
            shard.phase, shard.file_id, shard.batch_id, shard.status = "planned", None, None, None
            shard.output_file_id = shard.error_file_id = None
            shard.errors = shard.counts = None


def _unsendable(request: ChatRequest, why: str) -> ChatResult:
    """The error row of a request no batch can hold (nothing was sent)."""
    now = datetime.now(UTC)
    error = BatchLineInvalid(f"not sent in batch mode: {why}", code="too_large")
    return ChatResult(request, None, error, None, 0, 0.0, now, now)
