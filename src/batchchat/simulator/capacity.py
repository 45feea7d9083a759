"""A server that degrades under load: answers slow down past its capacity, and past twice
it requests are turned away with a 503 (``capacity`` in the simulator's settings)."""

from __future__ import annotations

from collections.abc import Callable

from batchchat.simulator.faults import LatencyModel
from batchchat.spec import SimulatorSpec

#: past this many times the capacity in flight, a request is refused at once
REFUSED_PAST = 2.0


class Capacity:
    """Latencies stretched by the load, and whether a request is refused."""

    def __init__(self, config: SimulatorSpec, in_flight: Callable[[], int]) -> None:
        self._capacity = config.capacity
        self._latency = LatencyModel(config.latency, config.faults.seed)
        self._in_flight = in_flight

    def _overload(self) -> float:
        """Requests in flight per unit of capacity (0 when the capacity is unlimited)."""
        return 0.0 if self._capacity is None else self._in_flight() / self._capacity

    def refuses(self) -> bool:
        """Whether a request arriving now is turned away (an overloaded server's 503)."""
        return self._overload() > REFUSED_PAST

    def latency_s(self) -> float:
        """This answer's latency: stretched by in-flight ÷ capacity, as a queue would."""
        return self._latency.sample() * max(1.0, self._overload())
