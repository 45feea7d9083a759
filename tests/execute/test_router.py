"""The router of a pool: tiers, weights, room, stickiness, and waiting in line. Time is fake."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

from batchchat.errors import AuthenticationError, ServerError
from batchchat.execute.admission import Admission
from batchchat.execute.health import PROVING_IN_FLIGHT, Health
from batchchat.execute.lane import Lane
from batchchat.execute.router import Router
from batchchat.execute.transport import HTTPRequest, HTTPResponse, MockTransport
from batchchat.models import ChatRequest
from batchchat.spec import LimitsSpec, RoutingSpec
from tests._fake_time import FakeTime


def _never_called(request: HTTPRequest) -> HTTPResponse:
    raise AssertionError("the router sends nothing")


def lane(
    name: str,
    time: FakeTime,
    *,
    priority: int = 1,
    weight: float = 1.0,
    concurrency: int = 4,
    rpm: int | None = None,
    proven: bool = True,
) -> Lane:
    health = Health(RoutingSpec())
    if proven:
        health.succeeded()
    limits = LimitsSpec(max_concurrency=concurrency, rpm=rpm)
    return Lane(
        url=f"http://{name}.test/v1/chat/completions",
        headers={},
        transport=MockTransport(_never_called),
        admission=Admission(limits, clock=time.clock, sleep=time.sleep),
        display=name,
        name=name,
        weight=weight,
        priority=priority,
        health=health,
    )


def router(lanes: list[Lane], time: FakeTime, **routing: object) -> Router:
    spec = RoutingSpec.model_validate(routing)
    return Router(lanes, spec, clock=time.clock, sleep=time.sleep, rng=random.Random(7))


async def fill(target: Lane) -> None:
    """Take every slot ``target`` has."""
    while target.admission.concurrency.has_room():
        await target.admission.admit(1)


async def test_the_first_tier_takes_everything_while_it_has_room() -> None:
    time = FakeTime()
    cheap, fallback = lane("cheap", time), lane("fallback", time, priority=2)
    pool = router([fallback, cheap], time)
    assert {pool.pick(1).name for _ in range(50)} == {"cheap"}  # type: ignore[union-attr]
    await fill(cheap)
    assert pool.pick(1) is fallback  # saturated: the fallback tier gets the overflow
    cheap.admission.release()
    assert pool.pick(1) is cheap


async def test_an_endpoint_that_is_out_passes_its_traffic_to_the_next_tier() -> None:
    time = FakeTime()
    cheap, fallback = lane("cheap", time), lane("fallback", time, priority=2)
    assert cheap.health is not None
    cheap.health.failed(AuthenticationError("401", status=401), sent_at=0.0, now=time.now)
    assert router([cheap, fallback], time).pick(1) is fallback


def test_weights_share_the_choice_among_endpoints_with_room() -> None:
    time = FakeTime()
    light, heavy = lane("light", time, weight=1), lane("heavy", time, weight=3)
    pool = router([light, heavy], time)
    picks = Counter(pool.pick(1).name for _ in range(4000))  # type: ignore[union-attr]
    assert 0.72 < picks["heavy"] / 4000 < 0.78


async def test_rate_buckets_decide_who_has_room() -> None:
    time = FakeTime()
    slow, fast = lane("slow", time, rpm=60), lane("fast", time)
    pool = router([slow, fast], time)
    await slow.admission.admit(1)  # slow's bucket needs a second to take another
    assert {pool.pick(1).name for _ in range(20)} == {"fast"}  # type: ignore[union-attr]
    time.now += 1.1
    assert {pool.pick(1).name for _ in range(50)} == {"slow", "fast"}  # type: ignore[union-attr]


def test_the_endpoint_that_failed_a_row_is_passed_over_when_another_has_room() -> None:
    time = FakeTime()
    a, b = lane("a", time), lane("b", time)
    pool = router([a, b], time)
    assert {pool.pick(1, avoid=a).name for _ in range(20)} == {"b"}  # type: ignore[union-attr]
    assert router([a], time).pick(1, avoid=a) is a  # alone, it is tried again


def test_endpoints_that_refused_a_row_never_see_it_again() -> None:
    time = FakeTime()
    a, b = lane("a", time), lane("b", time, priority=2)
    pool = router([a, b], time)
    assert pool.pick(1, refused={"a"}) is b
    assert pool.pick(1, refused={"a", "b"}) is None


async def test_a_new_endpoint_takes_a_couple_of_attempts_until_it_answers() -> None:
    time = FakeTime()
    new = lane("new", time, concurrency=64, proven=False)
    pool = router([new], time)
    for _ in range(PROVING_IN_FLIGHT):
        assert pool.pick(1) is new
        await new.admission.admit(1)
    assert pool.pick(1) is None
    assert new.health is not None
    new.health.succeeded()
    assert pool.pick(1) is new


def _request(row: str, content: str = "same prompt") -> ChatRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": content}]}
    return ChatRequest(row, 0, f"{row}#0", body, "h", 5, 5)


def test_sticky_rows_keep_their_endpoint_and_removing_one_moves_only_its_rows() -> None:
    time = FakeTime()
    lanes = [lane(name, time, concurrency=4096) for name in ("a", "b", "c")]
    pool = router(lanes, time, sticky="row")
    keys = [pool.sticky_key(_request(f"row-{i}")) for i in range(600)]

    def assignment() -> dict[str, str]:
        return {key: pool.pick(1, key=key).name for key in keys if key}  # type: ignore[union-attr]

    before = assignment()
    assert before == assignment()  # the same every time
    assert 150 < Counter(before.values())["a"] < 250  # and spread by weight
    assert lanes[2].health is not None
    lanes[2].health.failed(AuthenticationError("401", status=401), sent_at=0.0, now=time.now)
    after = assignment()
    moved = {key for key in keys if key and before[key] != after[key]}
    assert moved == {key for key, name in before.items() if name == "c"}


async def test_a_sticky_row_goes_to_the_next_in_its_order_when_its_own_is_full() -> None:
    time = FakeTime()
    a, b = lane("a", time, concurrency=1), lane("b", time, concurrency=1)
    pool = router([a, b], time, sticky="prefix", prefix_chars=20)
    key = pool.sticky_key(_request("x", "a long shared prefix, then the row's own text"))
    assert key == pool.sticky_key(_request("y", "a long shared prefix, then something else"))
    first = pool.pick(1, key=key)
    assert first is not None and first is pool.pick(1, key=key)
    await fill(first)
    assert pool.pick(1, key=key) is (b if first is a else a)


async def test_a_sticky_row_waits_for_its_endpoints_next_refill_rather_than_move() -> None:
    time = FakeTime()
    a, b = lane("a", time, rpm=120), lane("b", time, rpm=120)
    pool = router([a, b], time, sticky="row")
    key = pool.sticky_key(_request("r1"))
    own = pool.pick(1, key=key)
    assert own is not None
    await own.admission.admit(1)  # its bucket refills in half a second
    assert pool.pick(1, key=key) is own


async def test_waiting_attempts_go_when_a_slot_frees_first_come_first_served() -> None:
    time = FakeTime()
    only = lane("only", time, concurrency=1)
    pool = router([only], time)
    await fill(only)
    waiting = [asyncio.create_task(pool.route(1)) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(task.done() for task in waiting)
    only.admission.release()
    pool.wake()
    await asyncio.sleep(0)
    assert [task.done() for task in waiting] == [True, False, False]
    pool.close()
    assert await waiting[0] is only and await waiting[1] is None and await waiting[2] is None


async def test_a_waiting_attempt_is_woken_by_the_clock_when_a_bucket_refills() -> None:
    time = FakeTime()
    paced = lane("paced", time, rpm=60)
    pool = router([paced], time)
    await paced.admission.admit(1)
    started, slept = time.now, len(time.sleeps)
    chosen = await asyncio.wait_for(pool.route(1), 5)
    assert chosen is paced
    assert 0.9 < time.now - started < 1.2  # one timer, for the refill: no polling
    assert len(time.sleeps) == slept + 1
    await pool.aclose()


async def test_an_endpoint_back_from_its_cool_down_takes_one_probe() -> None:
    time = FakeTime()
    flaky = lane("flaky", time)
    assert flaky.health is not None
    for _ in range(RoutingSpec().failures):
        flaky.health.failed(ServerError("503", status=503), sent_at=time.now, now=time.now)
    pool = router([flaky], time)
    started = time.now
    assert await asyncio.wait_for(pool.route(1), 5) is flaky
    assert time.now - started == RoutingSpec().cooldown_s  # the timer rang as it came back
    await flaky.admission.admit(1)
    assert pool.pick(1) is None  # one probe at a time
    await pool.aclose()
