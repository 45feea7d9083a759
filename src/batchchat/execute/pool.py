"""A pool of endpoints in one run: its members opened, then routed, watched and counted.

:func:`open_pool` opens what the run needs of each member before the executor starts --
its target (a built-in simulator of its own when it asks for one), its key and headers,
its own transport (its timeouts, its connections). :class:`Pool` is what the executor
asks, per attempt: which lane (:mod:`batchchat.execute.router`), and what an outcome
means for that lane's health (:mod:`batchchat.execute.health`): a member taken out
for the run is said once, with its name and why; when none is left the run stops.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from batchchat.errors import ClientError, RequestError
from batchchat.execute.admission import Admission
from batchchat.execute.endpoint import Target, open_target, resolve_headers
from batchchat.execute.failfast import LOST_SERVER_S
from batchchat.execute.health import Health
from batchchat.execute.job import Job
from batchchat.execute.lane import Lane
from batchchat.execute.reask import AnswerPrice
from batchchat.execute.router import Router
from batchchat.execute.transport import AiohttpTransport, Transport
from batchchat.models import ChatResult, EndpointStats
from batchchat.secrets import redact_shapes
from batchchat.spec import LimitsSpec, PoolEndpointSpec, RoutingSpec


@dataclass(frozen=True)
class PoolMember:
    """One opened member: its spec, where it is, and its own transport and prices."""

    spec: PoolEndpointSpec
    target: Target
    transport: Transport
    #: prices what it answers (None: nothing is priced)
    price: AnswerPrice | None = None

    def cost_of(self, result: ChatResult) -> float | None:
        """The cost of a result it answered (None: unpriced, or no answer)."""
        if self.price is None or result.response is None:
            return None
        return self.price(result.request, result.response)


@dataclass(frozen=True)
class PoolSettings:
    """What the executor is told about a pool."""

    members: Sequence[PoolMember]
    routing: RoutingSpec
    #: told, once each, when a member is taken out for the run
    on_warning: Callable[[str], None] | None = None

    def workers(self, limits: LimitsSpec) -> int:
        """Attempts the pool can have in flight at once, all members together."""
        total = sum(member.spec.limits_over(limits).max_concurrency for member in self.members)
        return min(4096, total)


@contextlib.asynccontextmanager
async def open_pool(
    endpoints: Sequence[PoolEndpointSpec],
    *,
    limits: LimitsSpec,
    prices: Callable[[PoolEndpointSpec], AnswerPrice | None] = lambda member: None,
    force_simulator: bool = False,
) -> AsyncIterator[list[PoolMember]]:
    """Open every member (simulators started, transports made); close them at the end."""
    async with contextlib.AsyncExitStack() as stack:
        members = []
        for spec in endpoints:
            target = await stack.enter_async_context(
                open_target(spec, force_simulator=force_simulator)
            )
            if spec.is_simulator and spec.api_key_env and not force_simulator:
                target = _with_own_key(target, spec)
            concurrency = spec.limits_over(limits).max_concurrency
            transport = AiohttpTransport(spec, max_connections=concurrency)
            stack.push_async_callback(transport.aclose)
            members.append(PoolMember(spec, target, transport, prices(spec)))
        yield members


def _with_own_key(target: Target, spec: PoolEndpointSpec) -> Target:
    """A simulator member that names a key variable is sent that key, so a wrong or
    rotated key can be rehearsed (the simulator's ``api_key`` is the one it expects)."""
    headers = {**target.headers, **resolve_headers(spec, where=f"endpoints[{spec.name}]")}
    return Target(url=target.url, headers=headers, display=target.display)


class Pool:
    """The lanes of a pool in one run, their router, and what outcomes mean for them."""

    def __init__(
        self,
        settings: PoolSettings,
        limits: LimitsSpec,
        *,
        max_pause_s: float,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        redact: Callable[[str], str] = redact_shapes,
    ) -> None:
        self.lanes = [
            Lane(
                url=member.target.url,
                headers=member.target.headers,
                transport=member.transport,
                admission=Admission(
                    member.spec.limits_over(limits),
                    max_pause_s=max_pause_s,
                    clock=clock,
                    sleep=sleep,
                ),
                display=f"'{member.spec.name}' ({member.target.display})",
                cost_of=member.cost_of,
                price=member.price,
                name=member.spec.name,
                models=member.spec.model,
                weight=member.spec.weight,
                priority=member.spec.priority,
                health=Health(settings.routing, max_wait_s=max_pause_s),
            )
            for member in settings.members
        ]
        self.router = Router(self.lanes, settings.routing, clock=clock, sleep=sleep)
        self._clock = clock
        self._on_warning = settings.on_warning
        #: masks secrets in what is kept or said of an error (a server may echo a key)
        self._redact = redact
        #: why the run must stop: no lane is left (None while some is)
        self.verdict: str | None = None
        self._by_name = {lane.name: lane.stats for lane in self.lanes if lane.name is not None}
        #: since when every lane is down (None: some lane is in or on trial)
        self._down_since: float | None = None

    @property
    def allowed(self) -> int:
        """Attempts allowed in flight now, over the members still in the pool."""
        return sum(lane.admission.concurrency.allowed for lane in self.lanes if lane.alive)

    def endpoint_stats(self) -> dict[str, EndpointStats]:
        """The members' counters, by name (live: the run's stats hold these objects)."""
        return {lane.name or "": lane.stats for lane in self.lanes}

    # -- per attempt --------------------------------------------------------------------------

    async def route(self, job: Job) -> Lane | None:
        """The lane of ``job``'s next attempt, with its HTTP request made for it; None when
        the run stops sending first."""
        if job.route_key is None and self.router.sticky_key(job.request) is not None:
            job.route_key = self.router.sticky_key(job.request)
        lane = await self.router.route(
            job.request.est_tokens,
            key=job.route_key,
            avoid=job.lane,
            refused=job.refused or (),
        )
        if lane is not None:
            job.lane = lane
            job.http = lane.request_for(job.request, job.body)
        return lane

    def released(self) -> None:
        """An attempt gave its admission back: someone waiting may go."""
        self.router.wake()

    def answered(self, lane: Lane, status: int) -> None:
        stats = lane.stats
        stats.requests_sent += 1
        stats.status_counts[status] = stats.status_counts.get(status, 0) + 1
        if status == 429:
            stats.rate_limited += 1

    def failed(self, job: Job, error: RequestError, *, sent_at: float) -> None:
        """An attempt of ``job`` failed: the lane's health learns, and the job remembers an
        endpoint that refused it as a row it will not take."""
        lane = job.lane
        assert lane is not None and lane.health is not None  # pool jobs are routed
        now = self._clock()
        if lane.health.failed(error, sent_at=sent_at, now=now):
            lane.stats.cooldowns = lane.health.cooldowns
            if lane.health.removed is not None:
                self._removed(lane, lane.health.removed)
            self.router.wake()
        self._stop_if_all_down(now)
        if isinstance(error, ClientError) and lane.name is not None:
            job.refused = (job.refused or frozenset()) | {lane.name}

    def succeeded(self, lane: Lane) -> None:
        assert lane.health is not None
        was_probing = lane.health.probing
        lane.health.succeeded()
        self._down_since = None
        if was_probing:
            self.router.wake()  # back in: more may go there now

    def finished(self, name: str | None, ok: bool) -> None:
        """A row's result names endpoint ``name`` (None: it never went anywhere)."""
        stats = self._by_name.get(name) if name is not None else None
        if stats is None:
            return
        if ok:
            stats.results_ok += 1
        else:
            stats.results_error += 1

    def elsewhere(self, job: Job) -> bool:
        """Whether another lane may still take ``job`` (one not removed, not the last to
        fail it, not one that refused it)."""
        refused = job.refused or frozenset()
        return any(
            lane.alive and lane is not job.lane and lane.name not in refused for lane in self.lanes
        )

    def proven(self, lane: Lane | None) -> bool:
        return lane is None or lane.health is None or lane.health.proven

    # -- the end ------------------------------------------------------------------------------

    def _removed(self, lane: Lane, reason: str) -> None:
        reason = lane.stats.removed = self._redact(reason)
        if self._on_warning is not None:
            self._on_warning(f"endpoint {lane.display} is out of the pool for this run: {reason}")
        if not any(other.alive for other in self.lanes):
            self._give_up("every endpoint of the pool is out")

    def _stop_if_all_down(self, now: float) -> None:
        """Every endpoint out (cooling down since its last failures, or removed) for as long
        as a single endpoint's run may fail to connect before it stops: give up."""
        if not all(lane.health is not None and lane.health.down for lane in self.lanes):
            self._down_since = None
            return
        if self._down_since is None:
            self._down_since = now
        elif now - self._down_since >= LOST_SERVER_S:
            gone = f"{now - self._down_since:.0f}s"
            self._give_up(f"every endpoint of the pool has been out for {gone}")

    def _give_up(self, why: str) -> None:
        states = "; ".join(
            f"{lane.display}: {self._redact(lane.health.state())}"
            for lane in self.lanes
            if lane.health is not None
        )
        self.verdict = f"{why}: {states}"
        self.router.close()

    def close(self) -> None:
        """The run stops sending: attempts waiting for a lane get none."""
        self.router.close()

    async def aclose(self) -> None:
        await self.router.aclose()
