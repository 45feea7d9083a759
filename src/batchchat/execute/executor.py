"""Async orchestration of one execution: pull, admit, send, parse, retry, hand over.

A fixed pool of ``limits.max_concurrency`` workers takes jobs from one queue. Requests
enter it lazily, each holding one of ``max_pending`` slots until its final result, so
memory stays flat however many rows there are. A failed attempt worth retrying goes
back into the queue after its wait, ahead of the new rows
(:mod:`batchchat.execute.jobqueue`); the worker moves on meanwhile. The steps::

    _feed       requests → jobs (one pending slot each)
    _work       job → _attempt → _settle, until cancelled
    _attempt    (a pool: the router picks a lane) → admission (that lane's limits) → budget
                → _send → _parse → limits feedback
    _settle     success or final error → Execution.finish; retryable → Execution.retry_later
    _drain      after a stop: wait (bounded) for the attempts in flight

``ChatResult.latency_ms`` is the wall time from the first send to the final outcome,
retries and their waits included; ``started_at``/``finished_at`` are those two moments.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping

from batchchat.errors import RequestError
from batchchat.execute.admission import Admission
from batchchat.execute.budget import Budget
from batchchat.execute.job import Job
from batchchat.execute.lane import Pricer
from batchchat.execute.parse import parse_response
from batchchat.execute.pool import PoolSettings
from batchchat.execute.reask import Reasker
from batchchat.execute.share import LimitShare
from batchchat.execute.state import Execution, Settings
from batchchat.execute.transport import HTTPResponse, Transport
from batchchat.models import ChatRequest, ChatResponse, ChatResult, ExecutionStats, StopReason
from batchchat.secrets import redact_shapes
from batchchat.spec import LimitsSpec, RetrySpec

# -- the steps --------------------------------------------------------------------------------


async def _feed(
    run: Execution, requests: Iterable[ChatRequest] | AsyncIterable[ChatRequest]
) -> None:
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
        run.stop_on_error(error)
    finally:
        run.feeding = False
        if run.pending == 0:
            run.ended.set()


async def _take_slot(run: Execution) -> bool:
    await run.slots.acquire()
    return run.stopping is None


async def _work(run: Execution) -> None:
    """One worker: take a job, make one attempt, settle it; forever (cancelled at the end)."""
    try:
        while True:
            job = await run.queue.get()
            outcome = await _attempt(run, job)
            if outcome is None:
                run.drop(job)
            else:
                _settle(run, job, outcome)
    except Exception as error:  # a bug: the run ends, loudly
        run.fail(error)


async def _attempt(run: Execution, job: Job) -> ChatResponse | RequestError | None:
    """One attempt of ``job``; None when the run stopped before it could be sent."""
    if run.stopping is not None:
        return None
    pool = run.pool
    lane = run.lane if pool is None else await pool.route(job)
    if lane is None:
        return None
    admission, tokens = lane.admission, job.request.est_tokens
    send = await admission.admit(tokens)
    try:
        reserved = await _reserve_budget(run, job)
        if reserved is None:
            return None
        try:
            sent_at = run.sent(job)
            answer = await _send(run, job, lane.transport)
        finally:
            run.release_budget(reserved)
    finally:
        admission.release()
        if pool is not None:
            pool.released()
    if isinstance(answer, RequestError):
        admission.on_failure(answer, sent_at=sent_at)
        return answer
    admission.on_response(answer.headers, sent_at=sent_at, send=send, charged=tokens)
    return _parse(run, job, admission, answer, sent_at)


async def _reserve_budget(run: Execution, job: Job) -> float | None:
    """The attempt's worst-case cost, reserved; waits while in-flight attempts hold the room.

    None when the run is stopping, or the budget is spent (which starts the stop)."""
    budget = run.budget
    while run.stopping is None:
        if budget is None:
            return 0.0
        reserved = budget.reserve(job.request)
        if reserved is not None:
            return reserved
        if await budget.widen(job.request):  # a shared budget lent this executor more
            continue
        if run.stats.in_flight == 0 or not budget.fits_alone(job.request):
            run.begin_stop(StopReason.BUDGET)
            return None
        await run.budget_released().wait()
    return None


async def _send(run: Execution, job: Job, transport: Transport) -> HTTPResponse | RequestError:
    try:
        response = await transport.send(job.http)
    except RequestError as error:
        run.answered(job, 0)
        return error
    run.answered(job, response.status)
    return response


def _parse(
    run: Execution, job: Job, admission: Admission, response: HTTPResponse, sent_at: float
) -> ChatResponse | RequestError:
    try:
        completion = parse_response(
            response, stream=job.http.stream, keep_raw=run.settings.keep_raw
        )
    except RequestError as error:
        admission.on_failure(error, sent_at=sent_at)
        return error
    request, prompt_tokens = job.request, completion.usage.prompt_tokens
    counted = None if prompt_tokens is None else prompt_tokens + request.max_output_tokens
    admission.on_success(charged=request.est_tokens, counted=counted)
    run.succeeded(job)
    return completion


def _settle(run: Execution, job: Job, outcome: ChatResponse | RequestError) -> None:
    """A success or a final error becomes a result; a retryable error waits and goes again."""
    run.stats.concurrency = run.allowed
    if isinstance(outcome, ChatResponse):
        run.settle_answer(job, outcome)
        return
    run.failed(job, outcome)
    wait_s = run.next_wait(job, outcome)
    if wait_s is None:
        run.finish(job, None, outcome)
    elif run.stopping is not None:
        run.drop(job)
    else:
        run.retry_later(job, wait_s)


async def _watch(run: Execution, stop: asyncio.Event) -> None:
    await stop.wait()
    run.begin_stop(StopReason.INTERRUPTED)


async def _drain(run: Execution, stop: asyncio.Event | None, timeout_s: float) -> None:
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
    transport: Transport | None = None,
    url: str = "",
    headers: Mapping[str, str] | None = None,
    on_result: Callable[[ChatResult], None],
    stats: ExecutionStats,
    budget: Budget | None = None,
    cost_of: Pricer | None = None,
    endpoint: str | None = None,
    redact: Callable[[str], str] | None = None,
    stop: asyncio.Event | None = None,
    drain_timeout_s: float = 30.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    max_pending: int | None = None,
    pool: PoolSettings | None = None,
    reask: Reasker | None = None,
    share: LimitShare | None = None,
) -> ExecutionStats:
    """Send every request, retrying per ``retry`` within ``limits``; one
    :class:`ChatResult` per finished request goes to ``on_result``.

    Stops sending when ``stop`` is set (``stats.stop_reason`` ``INTERRUPTED``: in-flight
    attempts get ``drain_timeout_s``, then are cancelled without a result), when the
    budget would be passed (``BUDGET``: in-flight attempts finish), when nothing suggests
    any request can succeed (``FATAL``, said in ``stats.fatal_error``; see
    :mod:`batchchat.execute.failfast`: in-flight attempts finish), or when ``requests``
    or ``on_result`` raises (``ERROR``: in-flight attempts finish and are handed over,
    then the first error is raised).
    ``cost_of`` prices each result (the budget reads what is spent from ``stats``);
    ``endpoint`` names the server in messages (default: ``url``); ``redact`` masks secrets
    in what is kept of an error (``stats.fatal_error``). ``max_pending`` bounds
    the requests pulled from ``requests`` and not finished yet (default: 4 ×
    max_concurrency, at least 1024). ``reask`` checks each answer and asks a row again
    when it fails the check (:mod:`batchchat.execute.reask`).

    With a ``pool`` of endpoints (:mod:`batchchat.execute.pool`) instead of ``transport``,
    ``url`` and ``headers``, each attempt goes to the endpoint the pool's router picks, each
    within its own limits (``limits`` is the job's, under each member's own); a result
    names its endpoint, and ``cost_of`` is each member's own.
    ``share``: the RPM/TPM buckets and the rate-limit hold are kept with other executors of
    the same job (see :mod:`batchchat.execute.share`; not with a pool).
    """
    if pool is None and transport is None:
        raise TypeError("execute() needs a transport and url, or a pool")
    settings = Settings(
        limits=limits,
        retry=retry,
        keep_raw=keep_raw,
        transport=transport,
        url=url,
        headers=headers or {},
        on_result=on_result,
        endpoint=endpoint or url,
        redact=redact or redact_shapes,
        budget=budget,
        cost_of=cost_of,
        pool=pool,
        reask=reask,
        share=share,
    )
    workers = limits.max_concurrency if pool is None else pool.workers(limits)
    run = Execution(
        settings, stats, sleep=sleep, clock=clock, max_pending=max_pending or max(4 * workers, 1024)
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
        if run.pool is not None:
            await run.pool.aclose()
        run.settle_reasks()
        stats.in_flight = 0
    if run.fatal is not None:
        raise run.fatal
    if run.error is not None:
        raise run.error
    return stats


async def _cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
