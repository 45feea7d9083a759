"""One budget for every worker of a Ray run: each holds a part, lent by the coordinator.

A local run's :class:`~batchchat.execute.budget.Budget` reserves each attempt's worst
case against ``max_cost_usd`` before it is sent. On Ray each worker's Budget is a
:class:`SharedBudget`: its ``max_cost_usd`` is what the coordinator has lent it, never
more, and the coordinator never lends more than the job's budget in all. So the
workers together stay within the budget as a local run does -- a hard cap, whatever
their number -- at the price of stopping a little earlier: what one worker holds and
has not spent (less than a few worst cases) is not there for another at the very end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from batchchat.execute.budget import Budget
from batchchat.models import ChatRequest

#: a worker borrows room for this many worst-case attempts at a time (fewer round trips)
SLICE_ATTEMPTS = 8


class BudgetLender(Protocol):
    """The coordinator, as a worker's budget reaches it."""

    def lease_budget(self, max_cost_usd: float, need: float, want: float) -> Awaitable[float]: ...

    def give_back_budget(self, usd: float) -> None: ...


class SharedBudget(Budget):
    """A worker's part of the job's budget: it starts at nothing and borrows as it sends."""

    def __init__(
        self,
        job_max_usd: float,
        lender: BudgetLender,
        *,
        worst_case: Callable[[ChatRequest], float | None],
        spent: Callable[[], float],
    ) -> None:
        super().__init__(0.0, worst_case=worst_case, spent=spent)
        #: the whole job's budget (``max_cost_usd`` is this worker's part of it)
        self.job_max_usd = job_max_usd
        self._lender = lender
        #: one borrower at a time: attempts waiting together need one loan, not one each
        self._borrowing = asyncio.Lock()

    async def widen(self, request: ChatRequest) -> bool:
        """Borrow what ``request`` needs beyond this worker's part (and a few more)."""
        worst = self._worst_case(request) or 0.0
        async with self._borrowing:
            need = self.spent_usd + self.reserved_usd + worst - self.max_cost_usd
            if need <= 0:  # another attempt's loan made room meanwhile
                return True
            want = max(need, worst * SLICE_ATTEMPTS)
            granted = await self._lender.lease_budget(self.job_max_usd, need, want)
            self.max_cost_usd += granted
            return granted > 0

    def give_back(self) -> None:
        """Return what is neither spent nor reserved (this worker has nothing to send)."""
        unused = self.max_cost_usd - self.spent_usd - self.reserved_usd
        if unused > 0:
            self.max_cost_usd -= unused
            self._lender.give_back_budget(unused)
