"""One rate limit for every worker: leases, give-backs, holds, stops (in-process, no Ray)."""

from __future__ import annotations

import asyncio
import math

import pytest

from batchchat.cluster import limits
from batchchat.cluster.limits import ClusterShare, Coordinator, LeasedPacer, Watch
from batchchat.execute.admission import Admission
from batchchat.spec import LimitsSpec
from tests._fake_time import FakeTime


class Direct:
    """A CoordinatorClient that calls an in-process Coordinator (what the actor does)."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator
        self.leases = 0

    async def lease(
        self, kind: str, per_minute: float, need: float, want: float
    ) -> tuple[float, float]:
        self.leases += 1
        return self.coordinator.lease(kind, per_minute, need, want)

    async def watch(self, hold_until: float, stop: str | None) -> Watch:
        return await self.coordinator.watch(hold_until, stop)

    def give_back(self, kind: str, per_minute: float, amount: float) -> None:
        self.coordinator.give_back(kind, per_minute, amount)

    def hold(self, until: float) -> None:
        self.coordinator.hold(until)

    async def lease_budget(self, max_cost_usd: float, need: float, want: float) -> float:
        return self.coordinator.lease_budget(max_cost_usd, need, want)

    def give_back_budget(self, usd: float) -> None:
        self.coordinator.give_back_budget(usd)

    def report(self, worker: str, counters: bytes) -> None:
        self.coordinator.report(worker, counters)

    def stop(self, reason: str, message: str | None = None, error: str | None = None) -> None:
        self.coordinator.stop(reason, message, error)


def test_a_lease_grants_what_the_bucket_has_room_for_and_no_more() -> None:
    time = FakeTime()
    coordinator = Coordinator(clock=time.clock)
    # 6,000 RPM: a bucket of 10 requests that starts full, emptying at ~99.8 a second
    assert coordinator.lease("requests", 6000, 1, 5) == (0.0, pytest.approx(1 / 99.833, 1e-3))
    time.now += 0.1
    granted, wait = coordinator.lease("requests", 6000, 1, 5)
    assert (granted, wait) == (5.0, 0.0)
    second, _ = coordinator.lease("requests", 6000, 1, 50)  # the rest of the room, not 50
    assert second == pytest.approx(9.983 - 5, abs=0.01)
    assert coordinator.lease("requests", 6000, 1, 5)[0] == 0.0
    coordinator.give_back("requests", 6000, 3)  # unused: room for another worker at once
    assert coordinator.lease("requests", 6000, 1, 5)[0] == pytest.approx(3.0, abs=0.01)


def test_a_charge_larger_than_the_bucket_is_granted_once_it_is_empty() -> None:
    time = FakeTime()
    coordinator = Coordinator(clock=time.clock)
    granted, wait = coordinator.lease("tokens", 60_000, 5_000, 5_000)  # capacity 100 tokens
    assert granted == 0.0 and wait == pytest.approx(100 / 998.33, rel=1e-3)
    time.now += wait
    assert coordinator.lease("tokens", 60_000, 5_000, 5_000) == (5_000.0, 0.0)  # then owed


async def test_workers_leasing_from_one_coordinator_keep_the_limit_together() -> None:
    loop = asyncio.get_running_loop()
    coordinator = Coordinator(clock=loop.time)
    pacers = [
        LeasedPacer("requests", 6000, Direct(coordinator), clock=loop.time, sleep=asyncio.sleep)
        for _ in range(3)
    ]

    async def send(pacer: LeasedPacer, count: int) -> None:
        for _ in range(count):
            await pacer.acquire(1)

    start = loop.time()
    await asyncio.gather(*(send(pacer, 40) for pacer in pacers))
    elapsed = loop.time() - start
    # together never faster than the one bucket lets out: (6000 - 10) / 60 a second, from
    # a bucket that starts full; slower only when this machine is busy
    assert elapsed >= 120 / (5990 / 60) * 0.98
    leased = sum(coordinator.granted.values())
    assert leased == pytest.approx(120 + sum(pacer.balance for pacer in pacers))


async def test_what_a_worker_does_not_use_goes_back_after_a_moment() -> None:
    coordinator = Coordinator()
    client = Direct(coordinator)
    pacer = LeasedPacer(
        "tokens", 6_000_000, client, clock=asyncio.get_running_loop().time, sleep=asyncio.sleep
    )
    coordinator._bucket("tokens", 6_000_000).adjust(-10_000)  # an empty bucket: room now
    await pacer.acquire(100)
    assert pacer.balance == pytest.approx(5_000 - 100)  # a slice: 50 ms of the rate
    pacer.adjust(-400)  # the prompt was overestimated: a refund, for everyone
    assert pacer.balance == pytest.approx(5_300)
    await asyncio.sleep(limits.LEASE_S * 2)
    assert pacer.balance == 0.0
    assert coordinator.granted[("tokens", 6_000_000)] == pytest.approx(100 - 400)


async def test_a_retired_pacer_gives_back_what_it_holds_and_lets_waiters_go() -> None:
    coordinator = Coordinator()
    coordinator._bucket("requests", 60).adjust(-1)
    loop = asyncio.get_running_loop()
    pacer = LeasedPacer("requests", 60, Direct(coordinator), clock=loop.time, sleep=asyncio.sleep)
    await pacer.acquire(1)  # the one request of room
    waiting = asyncio.create_task(pacer.acquire(1))  # the next in ~1 s
    await asyncio.sleep(0.05)
    pacer.retire()
    await asyncio.wait_for(waiting, timeout=1)
    assert pacer.balance == 0.0 and pacer.wait_s(0) == 0.0


async def test_a_hold_set_by_one_worker_holds_every_worker() -> None:
    coordinator = Coordinator()
    shares = [ClusterShare(Direct(coordinator)) for _ in range(2)]
    admissions = []
    for share in shares:
        admissions.append(Admission(LimitsSpec(), share=share))
    following = [
        asyncio.create_task(share.follow(lambda reason, message: None)) for share in shares
    ]
    try:
        await asyncio.sleep(0)
        limited = admissions[0]
        limited.hold_until(limited._clock() + 30)  # a 429's retry-after, in worker 0
        await asyncio.sleep(0.05)
        assert coordinator.state().hold_until > 0
        assert admissions[1].paused_until == pytest.approx(limited.paused_until, abs=0.05)
        assert admissions[1].congested
    finally:
        for task in following:
            task.cancel()
        await asyncio.gather(*following, return_exceptions=True)


async def test_the_first_stop_is_the_runs_and_every_worker_hears_it() -> None:
    coordinator = Coordinator()
    share = ClusterShare(Direct(coordinator))
    heard: list[tuple[str, str | None]] = []
    following = asyncio.create_task(share.follow(lambda *said: heard.append(said)))
    await asyncio.sleep(0)
    coordinator.stop("fatal", "the key was refused", "AuthenticationError")
    coordinator.stop("budget")  # too late: the run stops for the first reason
    await asyncio.sleep(0.05)
    following.cancel()
    assert heard == [("fatal", "the key was refused")]
    assert coordinator.state() == Watch(
        -math.inf, "fatal", "the key was refused", "AuthenticationError"
    )


async def test_a_watch_answers_within_a_second_when_nothing_changes() -> None:
    coordinator = Coordinator()
    news = await asyncio.wait_for(coordinator.watch(-math.inf, None), limits.WATCH_S + 1)
    assert news == Watch(-math.inf, None, None)


def test_the_coordinator_never_lends_more_than_the_budget() -> None:
    coordinator = Coordinator()
    assert coordinator.lease_budget(1.0, 0.1, 0.4) == 0.4
    assert coordinator.lease_budget(1.0, 0.1, 0.4) == 0.4
    assert coordinator.lease_budget(1.0, 0.1, 0.4) == pytest.approx(0.2)  # what is left
    assert coordinator.lease_budget(1.0, 0.01, 0.4) == 0.0  # need does not fit: nothing
    coordinator.give_back_budget(0.25)  # a worker's unspent part
    assert coordinator.lease_budget(1.0, 0.2, 0.2) == 0.2
    assert coordinator.budget_lent_usd == pytest.approx(0.95)


@pytest.mark.parametrize(
    ("left", "workers", "part"),
    [(41, 2, 20), (41, 1, 41), (1, 3, 0), (-1, 2, -1), (math.inf, 2, math.inf)],
)
def test_a_servers_window_is_shared_out_among_the_workers(
    left: float, workers: int, part: float
) -> None:
    assert ClusterShare(Direct(Coordinator()), workers=workers).window_part(left) == part
