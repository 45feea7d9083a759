"""One Ray worker's engine: the batches it is given, planned and sent as a local run sends them.

Each worker (an actor of the ``map_batches`` pool) runs one long-lived executor -- the
local run's :func:`~batchchat.execute.executor.execute`, with its retries, parsing and
admission -- whose admission leases the job's RPM/TPM from the run's coordinator
(:mod:`batchchat.cluster.limits`). A batch of input rows is planned by the local run's
:class:`~batchchat.planning.planner.RowPlanner` (rows already done skipped, a row a
template fails on kept as an error row), its requests join the executor's queue, and
its results are encoded here and sent to the run's one writer
(:mod:`batchchat.cluster.sink`) every :data:`~batchchat.results.sink.BATCH_S`. A batch
is finished when every result of it is written: only then does Ray hear of it.

After a stop (the driver's interrupt, or the budget, a fatal error or a full disk in
any worker) the executor drains as a local run's does, and the batches still to come
are passed over: their rows are sent by the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

import orjson
import polars as pl
import pyarrow as pa

from batchchat.cluster.budget import SharedBudget
from batchchat.cluster.limits import ClusterShare, CoordinatorClient
from batchchat.errors import BatchchatError
from batchchat.execute.endpoint import Target
from batchchat.execute.executor import execute
from batchchat.execute.transport import AiohttpTransport
from batchchat.hooks import cost_of, reasker_of
from batchchat.job import CompiledJob, recompile_job
from batchchat.models import ChatRequest, ChatResult, ExecutionStats, StopReason
from batchchat.planning.planner import RowFailure, RowPlanner
from batchchat.planning.source import InputSource
from batchchat.results.encoder import ResultEncoder
from batchchat.results.ledger import ResumeIndex
from batchchat.results.runstats import stats_to_dict
from batchchat.results.sink import BATCH_S
from batchchat.runner import unsendable_result
from batchchat.secrets import Redactor
from batchchat.spec import JobSpec

#: how often a worker tells the coordinator its counters
REPORT_S = 0.5
#: the column of each input row's position (see :mod:`batchchat.cluster.input`)
POSITION = "__batchchat_position"


@dataclass(frozen=True)
class WorkerSetup:
    """What every worker of a run is given once (through Ray's object store)."""

    spec: JobSpec
    source: InputSource
    run_id: str
    #: where to send, with the headers (the key): never logged, see Target's repr
    target: Target
    secrets: frozenset[str]
    #: this worker's part of the job's max_concurrency
    concurrency: int
    #: what earlier runs finished (their rows are not sent again)
    done: ResumeIndex
    retry_failed: bool = True
    drain_timeout_s: float = 30.0
    #: how many workers send for the run
    workers: int = 1


class ResultsClient(Protocol):
    """The run's writer, as a worker reaches it."""

    def write(self, table: pa.Table) -> Awaitable[int]: ...


class _Batch:
    """One batch of input rows on its way: done when every result of it is written."""

    def __init__(self) -> None:
        self.pending = 0
        self.done = asyncio.Event()

    def add(self) -> None:
        self.pending += 1

    def written(self) -> None:
        self.pending -= 1
        if self.pending == 0:
            self.done.set()


class WorkerEngine:
    """Plans, sends and writes the batches one worker is given; one executor for all of them."""

    def __init__(
        self,
        setup: WorkerSetup,
        coordinator: CoordinatorClient,
        writer: ResultsClient,
        *,
        name: str,
    ) -> None:
        self.name = name
        self._setup = setup
        self._coordinator = coordinator
        self._writer = writer
        self._job: CompiledJob = recompile_job(setup.spec, setup.source)
        self.stats = ExecutionStats(run_id=setup.run_id, started_at=datetime.now(UTC))
        self._planner = RowPlanner(
            self._job.plan.request, setup.spec.input.id_column, on_failure=self._unsendable
        )
        self._encoder = ResultEncoder(
            self._job.columns, run_id=setup.run_id, redact=Redactor(setup.secrets)
        )
        self.share = ClusterShare(coordinator, workers=setup.workers)
        self.budget = self._budget()
        #: the batch each request (by custom id) belongs to
        self._owners: dict[str, _Batch] = {}
        #: the batch of each result in the encoder, in order
        self._unshipped: list[_Batch] = []
        self._planning: _Batch | None = None
        self._queue: asyncio.Queue[ChatRequest] = asyncio.Queue()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._executor: asyncio.Task[None] | None = None
        self._transport: AiohttpTransport | None = None
        #: what this worker could not do (a full disk, a broken input line), and the class
        #: of its error: the coordinator tells the driver
        self.error: str | None = None
        self._error_kind: str | None = None

    # -- a batch -----------------------------------------------------------------------------

    async def process(self, batch: pa.Table) -> pa.Table:
        """Plan and send one batch of input rows; returns this worker's counters once every
        result of the batch is written (the rows of a stopped run: at once)."""
        self._start()
        owner = _Batch()
        if not self._stopped:
            self._plan(batch, owner)
        if owner.pending:
            await owner.done.wait()
        if self.budget is not None and self.stats.in_flight == 0 and self._queue.empty():
            self.budget.give_back()  # idle until the next batch: the others may need it
        return self.summary()

    def _plan(self, batch: pa.Table, owner: _Batch) -> None:
        frame = pl.from_arrow(batch)
        assert isinstance(frame, pl.DataFrame)
        positions = frame.get_column(POSITION)
        rows = frame.drop(POSITION)
        self._planning = owner
        try:
            for offset, length, first in contiguous_runs(positions):
                part = rows.slice(offset, length)
                for request in self._planner.plan_batch(part, first, self._skip):
                    owner.add()
                    self._owners[request.custom_id] = owner
                    self._queue.put_nowait(request)
        finally:
            self._planning = None

    def _skip(self, row_ids: pl.Series, sample: int) -> pl.Series:
        done = self._setup.done.done(row_ids, sample, retry_failed=self._setup.retry_failed)
        self.stats.skipped += int(done.sum())
        return done

    def _unsendable(self, failure: RowFailure) -> None:
        owner = self._planning
        assert owner is not None  # called while a batch is planned
        owner.add()
        self.stats.results_error += 1
        self._keep(unsendable_result(failure), owner)

    def summary(self) -> pa.Table:
        """This worker's counters so far, as one row for the driver."""
        return pa.table({"worker": [self.name], "stats": [self.counters()]})

    def counters(self) -> bytes:
        """This worker's counters so far, as JSON."""
        if self._transport is not None:
            self.stats.resent = self._transport.stale_retries
        return orjson.dumps(stats_to_dict(self.stats))

    # -- the executor ------------------------------------------------------------------------

    @property
    def _stopped(self) -> bool:
        return self._executor is not None and self._executor.done()

    def _start(self) -> None:
        if self._executor is not None:
            return
        self._executor = asyncio.create_task(self._execute())
        self._tasks = [
            asyncio.create_task(self._ship_often()),
            asyncio.create_task(self.share.follow(self._on_stop)),
        ]

    async def _execute(self) -> None:
        setup, spec = self._setup, self._setup.spec
        limits = spec.limits.model_copy(update={"max_concurrency": setup.concurrency})
        self._transport = AiohttpTransport(spec.endpoint, max_connections=setup.concurrency)
        try:
            await execute(
                self._requests(),
                limits=limits,
                retry=spec.retry,
                keep_raw=spec.output.keep_raw,
                transport=self._transport,
                url=setup.target.url,
                headers=setup.target.headers,
                on_result=self._on_result,
                stats=self.stats,
                budget=self.budget,
                cost_of=cost_of(self._job.prices),
                endpoint=setup.target.display,
                redact=Redactor(setup.secrets),
                stop=self._stop,
                drain_timeout_s=setup.drain_timeout_s,
                share=self.share,
                reask=reasker_of(self._job),
            )
        except Exception as error:  # a broken input line, a bug: the driver says it
            self._fail(error)
        finally:
            await self._transport.aclose()
            await self._wind_down()

    async def _requests(self) -> AsyncIterator[ChatRequest]:
        while True:
            yield await self._queue.get()

    def _budget(self) -> SharedBudget | None:
        """This worker's part of the job's budget, borrowed from the coordinator."""
        budget = self._setup.spec.budget
        if budget is None:
            return None
        return SharedBudget(
            budget.max_cost_usd,
            self._coordinator,
            worst_case=self._job.prices.worst_case_usd,
            spent=lambda: self.stats.cost_usd,
        )

    def _on_result(self, result: ChatResult) -> None:
        self._keep(result, self._owners.pop(result.request.custom_id))

    def _keep(self, result: ChatResult, owner: _Batch) -> None:
        self._encoder.add(result)
        self._unshipped.append(owner)

    def _on_stop(self, reason: str, message: str | None) -> None:
        """Another worker, or the driver, stopped the run: stop sending, drain."""
        self._stop.set()

    async def _wind_down(self) -> None:
        """The executor has ended: tell the others why, write what is left, and let go of
        every batch (what was not sent is sent by the next run)."""
        self.share.give_back()
        if self.budget is not None:
            self.budget.give_back()
        reason = self.stats.stop_reason
        if reason is not StopReason.INTERRUPTED:
            message = self.error or self.stats.fatal_error
            self._coordinator.stop(str(reason), message, self._error_kind)
        await self._ship()
        for owner in {*self._owners.values(), *self._unshipped}:
            owner.done.set()
        self._owners.clear()

    # -- writing -----------------------------------------------------------------------------

    async def _ship_often(self) -> None:
        """Results to the writer every BATCH_S; counters to the coordinator every
        REPORT_S (the driver's progress: a batch's own summary comes when it ends)."""
        reported = time.monotonic()
        while True:
            await asyncio.sleep(BATCH_S)
            await self._ship()
            if time.monotonic() - reported >= REPORT_S:
                self._coordinator.report(self.name, self.counters())
                reported = time.monotonic()

    async def _ship(self) -> None:
        """Send the results gathered to the writer; their batches learn they are written."""
        if not len(self._encoder):
            return
        table, owners = self._encoder.take_table(), self._unshipped
        self._unshipped = []
        try:
            await self._writer.write(table)
        except Exception as error:  # a full disk (the writer keeps the table), a lost actor
            self._fail(error)
        for owner in owners:
            owner.written()

    def _fail(self, error: BaseException) -> None:
        """Stop every worker: the run cannot go on (the first error is the run's)."""
        error = getattr(error, "cause", None) or error  # what a Ray task raised, unwrapped
        if self.error is None:
            self.error, self._error_kind = error_message(error), type(error).__name__
        self.stats.stop_reason = StopReason.ERROR
        self._coordinator.stop(str(StopReason.ERROR), self.error, self._error_kind)
        self._stop.set()

    async def aclose(self) -> None:
        """Stop everything this worker started (tests; Ray ends an actor's process)."""
        self._stop.set()
        if self._executor is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._executor
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def contiguous_runs(positions: pl.Series) -> list[tuple[int, int, int]]:
    """(offset in the batch, length, position of the first row) of each stretch of rows
    whose positions follow one another (a batch may join the ends of two blocks)."""
    if positions.is_empty():
        return []
    breaks = (positions.diff() != 1).fill_null(True)
    starts = breaks.arg_true().to_list()
    ends = [*starts[1:], len(positions)]
    return [
        (start, end - start, int(positions[start])) for start, end in zip(starts, ends, strict=True)
    ]


def error_message(error: BaseException) -> str:
    """What went wrong, for people (a bug says what it is)."""
    if isinstance(error, BatchchatError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def worker_setup(setup: WorkerSetup, workers: int) -> WorkerSetup:
    """``setup`` with each worker's part of the job's max_concurrency (at least 1)."""
    share = -(-setup.spec.limits.max_concurrency // workers)
    return replace(setup, concurrency=max(1, share), workers=workers)
