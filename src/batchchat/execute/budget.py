"""Budget accounting of one run: spent + in-flight worst case must stay within the cap. Pure.

Before each attempt the executor reserves the request's worst-case cost (its prompt
estimate plus every output token it may produce, priced); the reservation is released
when the attempt ends. What is spent is read from the run's one tally (``ExecutionStats``,
kept by the executor), never counted a second time here.
An attempt that would take ``spent + reserved + worst case`` past ``max_cost_usd`` waits
for attempts in flight to end (they usually cost less than their worst case); when it
would not fit even with nothing in flight, the run stops sending and finishes what is
in flight. Unpriced requests (worst case None) count as free. A budget shared by several
executors (the Ray engine's workers) holds a part of the whole, and :meth:`Budget.widen`
asks for more before the executor waits or stops.
"""

from __future__ import annotations

from collections.abc import Callable

from batchchat.models import ChatRequest


class Budget:
    """The money side of a run: what is spent, what is in flight, and whether more fits."""

    def __init__(
        self,
        max_cost_usd: float,
        *,
        worst_case: Callable[[ChatRequest], float | None],
        spent: Callable[[], float],
    ) -> None:
        self.max_cost_usd = max_cost_usd
        #: prices a request's worst case (None: unknown, counts as 0)
        self._worst_case = worst_case
        #: the cost of the results finished so far (the run's tally)
        self._spent = spent
        #: worst-case cost of the attempts in flight
        self.reserved_usd = 0.0

    @property
    def spent_usd(self) -> float:
        return self._spent()

    def reserve(self, request: ChatRequest) -> float | None:
        """Reserve the worst case of one attempt; None when it does not fit now."""
        worst = self._worst_case(request) or 0.0
        if self.spent_usd + self.reserved_usd + worst > self.max_cost_usd:
            return None
        self.reserved_usd += worst
        return worst

    async def widen(self, request: ChatRequest) -> bool:
        """Make room for ``request`` beyond ``max_cost_usd``; True when there is more.

        A run's own budget is the whole of it: there is nothing more to have."""
        del request
        return False

    def fits_alone(self, request: ChatRequest) -> bool:
        """Whether the request would fit with nothing in flight (else the budget is spent)."""
        return self.spent_usd + (self._worst_case(request) or 0.0) <= self.max_cost_usd

    def release(self, reserved: float) -> None:
        """The attempt holding ``reserved`` has ended."""
        self.reserved_usd = max(0.0, self.reserved_usd - reserved)
