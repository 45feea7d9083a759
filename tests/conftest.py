"""Fixtures shared by the whole suite: the built-in simulator on 127.0.0.1, and a manual clock;
and how pytest-xdist spreads the tests over its workers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from xdist.scheduler import LoadScopeScheduling

from batchchat.simulator import SimulatorServer
from batchchat.spec import SimulatorSpec

#: tests that share something of the machine, by node id prefix: each set runs on one
#: pytest-xdist worker, one test after another -- the local Ray that tests/cluster/conftest.py
#: starts once per worker, and the real servers, whose rate limits the conformance suite
#: measures. (pytest-xdist's own ``xdist_group``/``--dist loadgroup`` cannot say this: under
#: pytest 9.2 it silently stops grouping, pytest-dev/pytest-xdist#1386.)
ONE_WORKER = ("tests/cluster/test_engine.py::", "tests/realserver/")


class _SharedOnOneWorker(LoadScopeScheduling):
    """pytest-xdist's load balancing test by test, except that each set of :data:`ONE_WORKER`
    is one unit of work (the largest are handed out first)."""

    def _split_scope(self, nodeid: str) -> str:
        return next((shared for shared in ONE_WORKER if nodeid.startswith(shared)), nodeid)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist's, which -p no:xdist leaves out
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> LoadScopeScheduling | None:
    if config.getvalue("dist") != "load":
        return None  # a --dist the command line chose
    return _SharedOnOneWorker(config, log)


class ManualClock:
    """A monotonic clock that only moves when a test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def manual_clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def simulator() -> AsyncIterator[SimulatorServer]:
    """A running simulator with the default config (no limits, no faults, no latency)."""
    async with SimulatorServer() as sim:
        yield sim


SimulatorFactory = Callable[..., Awaitable[SimulatorServer]]


@pytest.fixture
async def simulator_factory() -> AsyncIterator[SimulatorFactory]:
    """``await simulator_factory(spec)`` or ``await simulator_factory(rpm=60, faults={...})``.

    Keyword overrides are merged over ``spec`` (or the defaults) and validated;
    ``clock=`` and ``sleep=`` are passed to the server. Every server is stopped at teardown.
    """
    started: list[SimulatorServer] = []

    async def start(
        config: SimulatorSpec | None = None,
        /,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        **overrides: Any,
    ) -> SimulatorServer:
        spec = config or SimulatorSpec()
        if overrides:
            spec = SimulatorSpec.model_validate({**spec.model_dump(), **overrides})
        extra: dict[str, Any] = {"sleep": sleep}
        if clock is not None:
            extra["clock"] = clock
        sim = SimulatorServer(spec, **extra)
        await sim.start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        await sim.stop()
