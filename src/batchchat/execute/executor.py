"""Async orchestration of one execution: pull, admit, send, parse, retry, hand over.

A fixed pool of ``limits.max_concurrency`` workers takes jobs from one queue. Requests
enter it lazily, each holding one of ``max_pending`` slots until its final result, so
memory stays flat however many rows there are. A failed attempt worth retrying goes
back into the queue after its wait; the worker moves on meanwhile. The steps::

    _feed       requests → jobs (one pending slot each)
    _work       job → _attempt → _settle, until cancelled
    _attempt    admission (limits) → budget → _send → _parse → limits feedback
    _settle     success or final error → _Run.finish; retryable → _Run.retry_later
    _drain      after a stop: wait (bounded) for the attempts in flight

``ChatResult.latency_ms`` is the wall time from the first send to the final outcome,
retries and their waits included; ``started_at``/``finished_at`` are those two moments.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime

import orjson

from batchchat.errors import RequestError, is_fatal
from batchchat.execute.budget import Budget
from batchchat.execute.limits import RateLimiter
from batchchat.execute.parse import parse_response
from batchchat.execute.retry import RetryPolicy
from batchchat.execute.stats import StatsRecorder
from batchchat.execute.transport import HTTPRequest, HTTPResponse, Transport
from batchchat.models import ChatRequest, ChatResponse, ChatResult, ExecutionStats, StopReason
from batchchat.spec import LimitsSpec, RetrySpec

Pricer = Callable[[ChatResult], float | None]


class _Job:
    """One request on its way: the encoded HTTP request and what its attempts did."""

    __slots__ = ("attempts", "first_sent", "http", "request", "status")

    def __init__(self, request: ChatRequest, http: HTTPRequest) -> None:
        self.request = request
        self.http = http
        self.attempts = 0
        #: clock time of the first send
        self.first_sent = 0.0
        #: HTTP status of the last attempt (0: no response)
        self.status = 0


class _Run:
    """What one execution shares: settings, limiter, policy, counters, the job queue."""

    def __init__(
        self,
        *,
        limits: LimitsSpec,
        retry: RetrySpec,
        keep_raw: bool,
        transport: Transport,
        url: str,
        headers: Mapping[str, str],
        on_result: Callable[[ChatResult], None],
        stats: ExecutionStats,
        budget: Budget | None,
        cost_of: Pricer | None,
        sleep: Callable[[float], Awaitable[None]],
        clock: Callable[[], float],
        max_pending: int,
    ) -> None:
        self.transport = transport
        self.url = url
        self.headers = {"content-type": "application/json", **headers}
        self.keep_raw = keep_raw
        self.on_result = on_result
        self.stats = stats
        self.recorder = StatsRecorder(stats, clock)
        self.budget = budget
        self.cost_of = cost_of
        self.sleep = sleep
        self.clock = clock
        self.limiter = RateLimiter(limits, max_pause_s=retry.max_wait_s, clock=clock, sleep=sleep)
        self.policy = RetryPolicy(retry)
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        #: one per job pulled from the input and not finished yet
        self.slots = asyncio.Semaphore(max_pending)
        self.pending = 0
        self.feeding = True
        #: set when every job is finished, a stop began, or something broke
        self.ended = asyncio.Event()
        #: why the run stopped sending (None while it sends)
        self.stopping: StopReason | None = None
        self.fatal: BaseException | None = None
        #: what the planner raised (a malformed input line): raised after the drain
        self.input_error: Exception | None = None
        #: tasks waiting out a retry's backoff
        self.timers: set[asyncio.Task[None]] = set()
        #: set when nothing is in flight any more (created by _drain)
        self.idle: asyncio.Event | None = None
        #: set when a budget reservation is given back (created by a waiting attempt)
        self._budget_waiter: asyncio.Event | None = None
        #: the clock and the wall time at the start: result timestamps are derived from both
        self.t0 = clock()
        self.wall0 = time.time()

    # -- jobs in and out ----------------------------------------------------------------------

    def enqueue(self, request: ChatRequest) -> None:
        body = orjson.dumps(request.body)
        http = HTTPRequest(self.url, body, self.headers, bool(request.body.get("stream")))
        self.pending += 1
        self.queue.put_nowait(_Job(request, http))

    def drop(self, job: _Job) -> None:
        """Forget a job without a result (the run stopped): a re-run sends it again."""
        self._release_slot()

    def retry_later(self, job: _Job, wait_s: float) -> None:
        task = asyncio.create_task(self._requeue(job, wait_s))
        self.timers.add(task)
        task.add_done_callback(self.timers.discard)

    async def _requeue(self, job: _Job, wait_s: float) -> None:
        await self.sleep(wait_s)
        self.queue.put_nowait(job)

    def finish(self, job: _Job, response: ChatResponse | None, error: RequestError | None) -> None:
        """Build the job's final result, price it, count it and hand it to the sink."""
        now = self.clock()
        result = ChatResult(
            request=job.request,
            response=response,
            error=error,
            http_status=job.status or None,
            attempts=job.attempts,
            latency_ms=(now - job.first_sent) * 1000.0,
            started_at=self._wall(job.first_sent),
            finished_at=self._wall(now),
        )
        if self.cost_of is not None:
            result.cost_usd = self.cost_of(result)
        self.recorder.result(result, now)
        self.on_result(result)
        self._release_slot()

    def _release_slot(self) -> None:
        self.pending -= 1
        self.slots.release()
        if self.pending == 0 and not self.feeding:
            self.ended.set()

    def _wall(self, at: float) -> datetime:
        return datetime.fromtimestamp(self.wall0 + (at - self.t0), UTC)

    # -- stopping -----------------------------------------------------------------------------

    def begin_stop(self, reason: StopReason) -> None:
        if self.stopping is None:
            self.stopping = reason
            self.stats.stop_reason = reason
            self.ended.set()

    def stop_on_fatal(self, error: RequestError) -> None:
        """Every other request would fail like ``error``: send nothing more."""
        if self.stats.fatal_error is None:
            self.stats.fatal_error = f"{type(error).__name__}: {error}"
        self.begin_stop(StopReason.FATAL)

    def stop_on_input_error(self, error: Exception) -> None:
        """The planner failed: send nothing more, let the attempts in flight finish and be
        saved (they are paid for), then raise ``error``."""
        self.input_error = error
        self.begin_stop(StopReason.ERROR)

    def fail(self, error: BaseException) -> None:
        if self.fatal is None:
            self.fatal = error
        self.ended.set()

    def budget_released(self) -> asyncio.Event:
        """Set the next time an attempt gives its budget reservation back."""
        if self._budget_waiter is None:
            self._budget_waiter = asyncio.Event()
        return self._budget_waiter

    def release_budget(self, reserved: float) -> None:
        if self.budget is not None:
            self.budget.release(reserved)
            if self._budget_waiter is not None:
                self._budget_waiter.set()
                self._budget_waiter = None

    # -- attempts -----------------------------------------------------------------------------

    def sent(self, job: _Job) -> float:
        """Count one attempt of ``job`` going out; returns its clock time."""
        job.attempts += 1
        now = self.recorder.attempt_sent(retry=job.attempts > 1)
        if job.attempts == 1:
            job.first_sent = now
        return now

    def answered(self, job: _Job, status: int) -> None:
        """Count the end of one attempt (status 0: no response)."""
        job.status = status
        self.recorder.attempt_ended(status)
        if self.idle is not None and self.stats.in_flight == 0:
            self.idle.set()


# -- the steps --------------------------------------------------------------------------------


async def _feed(run: _Run, requests: Iterable[ChatRequest] | AsyncIterable[ChatRequest]) -> None:
    """Pull requests one pending slot at a time, so the input is never read far ahead."""
    try:
        if isinstance(requests, AsyncIterable):
            iterator = aiter(requests)
            while await _take_slot(run) and (request := await anext(iterator, None)):
                run.enqueue(request)
        else:
            items = iter(requests)
            while await _take_slot(run) and (request := next(items, None)):
                run.enqueue(request)
        run.slots.release()  # the slot taken for the request that never came
    except Exception as error:  # the planner's InputError must reach the runner
        run.stop_on_input_error(error)
    finally:
        run.feeding = False
        if run.pending == 0:
            run.ended.set()


async def _take_slot(run: _Run) -> bool:
    await run.slots.acquire()
    return run.stopping is None


async def _work(run: _Run) -> None:
    """One worker: take a job, make one attempt, settle it; forever (cancelled at the end)."""
    try:
        while True:
            job = await run.queue.get()
            outcome = await _attempt(run, job)
            if outcome is None:
                run.drop(job)
            else:
                _settle(run, job, outcome)
    except Exception as error:  # a sink that cannot write ends the run, loudly
        run.fail(error)


async def _attempt(run: _Run, job: _Job) -> ChatResponse | RequestError | None:
    """One attempt of ``job``; None when the run stopped before it could be sent."""
    if run.stopping is not None:
        return None
    limiter, tokens = run.limiter, job.request.est_tokens
    await limiter.admit(tokens)
    try:
        reserved = await _reserve_budget(run, job)
        if reserved is None:
            return None
        try:
            sent_at = run.sent(job)
            answer = await _send(run, job)
        finally:
            run.release_budget(reserved)
    finally:
        limiter.release()
    if isinstance(answer, RequestError):
        limiter.on_failure(answer, sent_at=sent_at)
        return answer
    limiter.on_response(answer.headers, sent_at=sent_at, charged=tokens)
    return _parse(run, job, answer, sent_at)


async def _reserve_budget(run: _Run, job: _Job) -> float | None:
    """The attempt's worst-case cost, reserved; waits while in-flight attempts hold the room.

    None when the run is stopping, or the budget is spent (which starts the stop)."""
    budget = run.budget
    while run.stopping is None:
        if budget is None:
            return 0.0
        reserved = budget.reserve(job.request)
        if reserved is not None:
            return reserved
        if run.stats.in_flight == 0 or not budget.fits_alone(job.request):
            run.begin_stop(StopReason.BUDGET)
            return None
        await run.budget_released().wait()
    return None


async def _send(run: _Run, job: _Job) -> HTTPResponse | RequestError:
    try:
        response = await run.transport.send(job.http)
    except RequestError as error:
        run.answered(job, 0)
        return error
    run.answered(job, response.status)
    return response


def _parse(
    run: _Run, job: _Job, response: HTTPResponse, sent_at: float
) -> ChatResponse | RequestError:
    try:
        completion = parse_response(response, stream=job.http.stream, keep_raw=run.keep_raw)
    except RequestError as error:
        run.limiter.on_failure(error, sent_at=sent_at)
        return error
    request, prompt_tokens = job.request, completion.usage.prompt_tokens
    counted = None if prompt_tokens is None else prompt_tokens + request.max_output_tokens
    run.limiter.on_success(charged=request.est_tokens, counted=counted)
    return completion


def _settle(run: _Run, job: _Job, outcome: ChatResponse | RequestError) -> None:
    """A success or a final error becomes a result; a retryable error waits and goes again."""
    if run.limiter.concurrency is not None:
        run.stats.concurrency = int(run.limiter.concurrency.limit)
    if isinstance(outcome, ChatResponse):
        run.finish(job, outcome, None)
        return
    wait_s = run.policy.next_wait(outcome, job.attempts)
    if wait_s is None:
        run.finish(job, None, outcome)
        if is_fatal(outcome):
            run.stop_on_fatal(outcome)
    elif run.stopping is not None:
        run.drop(job)
    else:
        run.retry_later(job, wait_s)


async def _watch(run: _Run, stop: asyncio.Event) -> None:
    await stop.wait()
    run.begin_stop(StopReason.INTERRUPTED)


async def _drain(run: _Run, stop: asyncio.Event | None, timeout_s: float) -> None:
    """Wait for the attempts in flight: all of them after a budget, fatal or input-error
    stop (unless interrupted meanwhile), at most ``timeout_s`` after an interrupt."""
    if run.stats.in_flight <= 0:
        return
    run.idle = idle = asyncio.Event()
    if run.stopping in (StopReason.BUDGET, StopReason.ERROR, StopReason.FATAL):
        if stop is None:
            await idle.wait()
            return
        await _first_of(idle.wait(), stop.wait())
    if run.stats.in_flight > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(idle.wait(), timeout_s)


async def _first_of(*waits: Awaitable[object]) -> None:
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# -- the entry point --------------------------------------------------------------------------


async def execute(
    requests: Iterable[ChatRequest] | AsyncIterable[ChatRequest],
    *,
    limits: LimitsSpec,
    retry: RetrySpec,
    keep_raw: bool = False,
    transport: Transport,
    url: str,
    headers: Mapping[str, str],
    on_result: Callable[[ChatResult], None],
    stats: ExecutionStats,
    budget: Budget | None = None,
    cost_of: Pricer | None = None,
    stop: asyncio.Event | None = None,
    drain_timeout_s: float = 30.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    max_pending: int | None = None,
) -> ExecutionStats:
    """Send every request, retrying per ``retry`` within ``limits``; one
    :class:`ChatResult` per finished request goes to ``on_result``.

    Stops sending when ``stop`` is set (``stats.stop_reason`` ``INTERRUPTED``: in-flight
    attempts get ``drain_timeout_s``, then are cancelled without a result), when the
    budget would be passed (``BUDGET``: in-flight attempts finish), at an error every
    request would repeat (``FATAL``, said in ``stats.fatal_error``: in-flight attempts
    finish), or when ``requests`` raises (``ERROR``: in-flight attempts finish, then the
    error is raised).
    ``cost_of`` prices each result (the budget reads what is spent from ``stats``).
    ``max_pending`` bounds the requests pulled from ``requests`` and not finished yet
    (default: 4 × max_concurrency, at least 1024).
    """
    workers = limits.max_concurrency
    run = _Run(
        limits=limits,
        retry=retry,
        keep_raw=keep_raw,
        transport=transport,
        url=url,
        headers=headers,
        on_result=on_result,
        stats=stats,
        budget=budget,
        cost_of=cost_of,
        sleep=sleep,
        clock=clock,
        max_pending=max_pending or max(4 * workers, 1024),
    )
    stats.concurrency = workers
    tasks = []
    if stop is not None:
        if stop.is_set():
            run.begin_stop(StopReason.INTERRUPTED)
        tasks.append(asyncio.create_task(_watch(run, stop)))
    tasks.append(asyncio.create_task(_feed(run, requests)))
    tasks += [asyncio.create_task(_work(run)) for _ in range(workers)]
    try:
        await run.ended.wait()
        if run.fatal is None:
            await _drain(run, stop, drain_timeout_s)
    finally:
        await _cancel_all([*tasks, *run.timers])
        stats.in_flight = 0
    if run.fatal is not None:
        raise run.fatal
    if run.input_error is not None:
        raise run.input_error
    return stats


async def _cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
