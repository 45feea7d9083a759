"""What one execution shares: its settings, admission, policy, counters and job queue.

:mod:`batchchat.execute.executor` runs the steps; this module holds the state they
share and the bookkeeping of each transition: a job enters, an attempt goes out and
ends, a job is retried later, finished (its result handed over) or dropped, and the
run stops sending.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from batchchat.errors import RateLimitError, RequestError, is_fatal
from batchchat.execute.admission import Admission
from batchchat.execute.budget import Budget
from batchchat.execute.failfast import FailFast
from batchchat.execute.job import Job
from batchchat.execute.jobqueue import JobQueue
from batchchat.execute.lane import Lane, Pricer
from batchchat.execute.pool import Pool, PoolSettings
from batchchat.execute.reask import Asked, Reasker
from batchchat.execute.retry import RetryPolicy
from batchchat.execute.share import LimitShare
from batchchat.execute.stats import StatsRecorder
from batchchat.execute.transport import HTTPRequest, Transport
from batchchat.models import ChatRequest, ChatResponse, ChatResult, ExecutionStats, StopReason
from batchchat.spec import LimitsSpec, RetrySpec

__all__ = ["Execution", "Settings"]


@dataclass(frozen=True)
class Settings:
    """What an execution is told: where to send, how, and what to do with results."""

    limits: LimitsSpec
    retry: RetrySpec
    keep_raw: bool
    #: the single endpoint (unused with a pool)
    transport: Transport | None
    url: str
    headers: Mapping[str, str]
    on_result: Callable[[ChatResult], None]
    #: the endpoint as people know it (no credentials), for messages
    endpoint: str
    #: masks secrets in what is kept of an error
    redact: Callable[[str], str] = str
    budget: Budget | None = None
    cost_of: Pricer | None = None
    #: the job's check of answers and its re-asks (None: every answer is final)
    reask: Reasker | None = None
    #: a pool of endpoints instead of the single one
    pool: PoolSettings | None = None
    #: the limits' buckets and holds, when other executors send for the same job
    share: LimitShare | None = None


class Execution:
    """The shared state of one execution."""

    def __init__(
        self,
        settings: Settings,
        stats: ExecutionStats,
        *,
        sleep: Callable[[float], Awaitable[None]],
        clock: Callable[[], float],
        max_pending: int,
    ) -> None:
        self.settings = settings
        self.stats = stats
        self.recorder = StatsRecorder(stats, clock)
        self.budget = settings.budget
        self.sleep = sleep
        self.clock = clock
        retry = settings.retry
        #: a pool of endpoints routes each attempt; without one, every attempt takes ``lane``
        self.pool: Pool | None = None
        if settings.pool is not None:
            self.pool = Pool(
                settings.pool,
                settings.limits,
                max_pause_s=retry.max_wait_s,
                clock=clock,
                sleep=sleep,
                redact=settings.redact,
            )
            stats.endpoints = self.pool.endpoint_stats()
            self.lane = self.pool.lanes[0]  # only what enqueue encodes: a route replaces it
        else:
            assert settings.transport is not None  # without a pool the transport is required
            admission = Admission(
                settings.limits,
                max_pause_s=retry.max_wait_s,
                clock=clock,
                sleep=sleep,
                share=settings.share,
            )
            self.lane = Lane(
                url=settings.url,
                headers=settings.headers,
                transport=settings.transport,
                admission=admission,
                display=settings.endpoint,
                cost_of=settings.cost_of,
            )
        self.policy = RetryPolicy(retry)
        self.failfast = FailFast(settings.endpoint, clock)
        #: jobs for the workers: retries ahead of new rows
        self.queue: JobQueue[Job] = JobQueue()
        #: one per job pulled from the input and not finished yet
        self.slots = asyncio.Semaphore(max_pending)
        self.pending = 0
        self.feeding = True
        #: set when every job is finished, a stop began, or something broke
        self.ended = asyncio.Event()
        #: why the run stopped sending (None while it sends)
        self.stopping: StopReason | None = None
        self.fatal: BaseException | None = None
        #: what the planner (a malformed input line) or the consumer of results (a full
        #: disk) raised first: raised after the drain
        self.error: Exception | None = None
        #: tasks waiting out a retry's backoff
        self.timers: set[asyncio.Task[None]] = set()
        #: re-asks not settled yet: each holds a paid answer that must reach the sink
        self.reasking: set[Job] = set()
        #: set when nothing is in flight any more (created by the drain)
        self.idle: asyncio.Event | None = None
        #: set when a budget reservation is given back (created by a waiting attempt)
        self._budget_waiter: asyncio.Event | None = None
        #: the clock and the wall time at the start: result timestamps are derived from both
        self.t0 = clock()
        self.wall0 = time.time()

    # -- jobs in and out --------------------------------------------------------------------

    def enqueue(self, request: ChatRequest, asked: Asked | None = None) -> Job:
        """Queue ``request``: a new row's (taking a pending slot), or a re-ask of a row
        that holds one already (``asked``)."""
        body = orjson.dumps(request.body)
        lane = self.lane
        http = HTTPRequest(lane.url, body, lane.headers, bool(request.body.get("stream")))
        job = Job(request, http, asked)
        if asked is None:
            self.pending += 1
        else:
            self.reasking.add(job)
        self.queue.put(job)
        return job

    def settle_reasks(self) -> None:
        """The run is over: each re-ask still queued, waiting or cut off in flight ends
        with the answer its row already paid for."""
        for job in list(self.reasking):
            self.finish(job, None, None)

    def drop(self, job: Job) -> None:
        """Forget a job without a result (the run stopped): a re-run sends it again. A row
        that holds a paid answer (a re-ask was due) ends with that answer instead.

        In a pool whose run goes on, a job is dropped only when no endpoint is left that may
        take it (the others refused it, or are out for good): its last error is its result.
        """
        if job.asked is not None and job.asked.answers:
            self.finish(job, None, None)
            return
        if self.stopping is None and job.last_error is not None:
            self.finish(job, None, job.last_error)
            return
        self._release_slot()

    def settle_answer(self, job: Job, response: ChatResponse) -> None:
        """An answer came back: the row's result, or, when its job re-asks and the answer
        fails the check, a re-ask (the answer is counted now: it is paid for)."""
        reask = self.settings.reask
        if reask is None:
            self.finish(job, response, None)
            return
        asked = job.asked = job.asked or Asked(job.request, job.first_sent)
        lane = job.lane
        price = lane.price if lane is not None and lane.price is not None else reask.price
        cost = price(asked.original, response)
        asked.answers.append(response)
        asked.costs.append(cost)
        asked.answer_status = job.status
        self.recorder.answer(response.usage, cost, reask=asked.reasks > 0)
        follow_up = reask.follow_up(asked, job.request) if self.stopping is None else None
        if follow_up is None:
            self.finish(job, response, None)
            return
        asked.earlier_attempts += job.attempts
        self.stats.reasks += 1
        self.reasking.discard(job)  # the row goes on as the follow-up's job
        follow = self.enqueue(follow_up, asked)
        follow.answered_by = job.lane.name if job.lane is not None else None

    def retry_later(self, job: Job, wait_s: float) -> None:
        if wait_s <= 0:
            self.queue.put_retry(job)
            return
        task = asyncio.create_task(self._requeue(job, wait_s))
        self.timers.add(task)
        task.add_done_callback(self.timers.discard)

    async def _requeue(self, job: Job, wait_s: float) -> None:
        await self.sleep(wait_s)
        self.queue.put_retry(job)

    def finish(self, job: Job, response: ChatResponse | None, error: RequestError | None) -> None:
        """Build the job's final result, price it, count it and hand it to the sink."""
        now = self.clock()
        asked = job.asked
        self.reasking.discard(job)
        status, unanswered = job.status, False
        if asked is not None and response is None and asked.answers:
            # a re-ask failed, or the run stopped before it went: the row keeps the last
            # answer it paid for (its parse status says what is wrong with it); a re-ask
            # that went out counts, answered or not
            response, error, status = asked.answers[-1], None, asked.answer_status
            unanswered = job.attempts > 0
        first_sent = job.first_sent if asked is None else asked.first_sent
        result = ChatResult(
            request=job.request if asked is None else asked.original,
            response=response,
            error=error,
            http_status=status or None,
            attempts=job.attempts + (0 if asked is None else asked.earlier_attempts),
            latency_ms=(now - first_sent) * 1000.0,
            started_at=self._wall(first_sent),
            finished_at=self._wall(now),
        )
        lane = job.lane or self.lane  # in a pool, the lane of the last attempt
        if asked is not None:
            result.reasks = asked.reasks + (1 if unanswered else 0)
            result.ask_costs_usd = list(asked.costs)
            known = [cost for cost in asked.costs if cost is not None]
            result.cost_usd = math.fsum(known) if known else None
        elif lane.cost_of is not None:
            result.cost_usd = lane.cost_of(result)
        if self.pool is not None:
            # a row that keeps an earlier answer names the endpoint that gave it
            replied = job.answered_by if unanswered or job.lane is None else job.lane.name
            result.endpoint = replied
            self.pool.finished(replied, ok=result.response is not None)
        self.recorder.result(result, now)
        try:
            self.settings.on_result(result)
        except Exception as failure:  # the results cannot be written (a full disk)
            self.stop_on_error(failure)
        self._release_slot()
        # in a pool, a rejected key or no quota is one endpoint's: its health takes it out
        if self.pool is None or error is None or not is_fatal(error):
            self.failfast.finished(error)
        self._stop_if_hopeless()

    def _release_slot(self) -> None:
        self.pending -= 1
        self.slots.release()
        if self.pending == 0 and not self.feeding:
            self.ended.set()

    def _wall(self, at: float) -> datetime:
        return datetime.fromtimestamp(self.wall0 + (at - self.t0), UTC)

    # -- attempts ---------------------------------------------------------------------------

    def sent(self, job: Job) -> float:
        """Count one attempt of ``job`` going out; returns its clock time."""
        job.attempts += 1
        now = self.recorder.attempt_sent(retry=job.attempts > 1)
        if job.attempts == 1:
            job.first_sent = now
        job.last_sent = now
        return now

    def answered(self, job: Job, status: int) -> None:
        """Count the end of one attempt (status 0: no response)."""
        job.status = status
        self.recorder.attempt_ended(status)
        if self.pool is not None and job.lane is not None:
            self.pool.answered(job.lane, status)
        if status:
            self.failfast.answered()
        if self.idle is not None and self.stats.in_flight == 0:
            self.idle.set()

    def failed(self, job: Job, error: RequestError) -> None:
        """One attempt of ``job`` failed with ``error`` (before its retry is decided)."""
        if isinstance(error, RateLimitError):
            job.limited_since = min(job.limited_since, self.clock())
        else:
            job.counted += 1
            job.limited_since = math.inf
        if self.pool is None:
            self.failfast.attempt_failed(error)
        else:  # each endpoint's own health judges its connections (a pool goes on without one)
            job.last_error = error
            self.pool.failed(job, error, sent_at=job.last_sent)
        self._stop_if_hopeless()

    def succeeded(self, job: Job) -> None:
        """An attempt of ``job`` brought its answer."""
        if self.pool is not None and job.lane is not None:
            self.pool.succeeded(job.lane)

    def next_wait(self, job: Job, error: RequestError) -> float | None:
        """Seconds before ``job`` is tried again after ``error``; None: it failed for good."""
        limited_for = self.clock() - job.limited_since if math.isfinite(job.limited_since) else 0.0
        lane = job.lane or self.lane
        pool = self.pool
        return self.policy.next_wait(
            error,
            job.counted,
            congested=lane.admission.congested,
            limited_for_s=limited_for,
            elsewhere=pool is not None and pool.elsewhere(job),
            endpoint_proven=pool is None or pool.proven(job.lane),
        )

    @property
    def allowed(self) -> int:
        """Attempts allowed in flight now (the adaptive limits, over every lane)."""
        return self.lane.admission.concurrency.allowed if self.pool is None else self.pool.allowed

    # -- stopping ---------------------------------------------------------------------------

    def begin_stop(self, reason: StopReason) -> None:
        if self.stopping is None:
            self.stopping = reason
            self.stats.stop_reason = reason
            self.ended.set()
            if self.pool is not None:
                self.pool.close()

    def _stop_if_hopeless(self) -> None:
        """Every other request would fail like the ones so far (or no endpoint of the pool
        is left): send nothing more."""
        verdict = self.failfast.verdict or (self.pool.verdict if self.pool is not None else None)
        if verdict is not None and self.stopping is None:
            self.stats.fatal_error = self.settings.redact(verdict)
            self.begin_stop(StopReason.FATAL)

    def stop_on_error(self, error: Exception) -> None:
        """The planner or the consumer of results failed: send nothing more, let the
        attempts in flight finish and be handed over (they are paid for), then raise the
        first ``error``."""
        if self.error is None:
            self.error = error
        self.begin_stop(StopReason.ERROR)

    def fail(self, error: BaseException) -> None:
        if self.fatal is None:
            self.fatal = error
        self.ended.set()

    # -- the budget -------------------------------------------------------------------------

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
