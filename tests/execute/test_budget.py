"""Budget accounting: spent + in-flight worst case never passes the cap."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchchat.execute.budget import Budget
from batchchat.models import ChatRequest


def _request(worst: float | None = 0.1, row: str = "r") -> ChatRequest:
    body = {"model": "m", "messages": [], "worst": worst}
    return ChatRequest(row, 0, f"{row}#0", body, "h", 10, 10)


def _worst(request: ChatRequest) -> float | None:
    value = request.body["worst"]
    return None if value is None else float(value)


class Tally:
    """The run's tally of what finished results cost (the executor's stats, in a run)."""

    def __init__(self) -> None:
        self.cost_usd = 0.0

    def record(self, cost_usd: float | None) -> None:
        self.cost_usd += cost_usd or 0.0


def _budget(cap: float) -> tuple[Budget, Tally]:
    tally = Tally()
    return Budget(cap, worst_case=_worst, spent=lambda: tally.cost_usd), tally


def test_reservations_fit_until_the_cap() -> None:
    budget, _ = _budget(1.0)
    assert budget.reserve(_request(0.4)) == 0.4
    assert budget.reserve(_request(0.4)) == 0.4
    assert budget.reserve(_request(0.4)) is None  # 1.2 > 1.0
    assert budget.reserved_usd == 0.8
    assert budget.fits_alone(_request(0.4))  # it would fit once the others are done


def test_released_reservations_and_real_costs_are_what_counts() -> None:
    budget, tally = _budget(1.0)
    reserved = budget.reserve(_request(0.5))
    assert reserved is not None
    budget.release(reserved)
    tally.record(0.05)  # the attempt cost a tenth of its worst case
    assert budget.spent_usd == 0.05
    assert budget.reserved_usd == 0.0
    assert budget.max_cost_usd - budget.spent_usd == pytest.approx(0.95)


def test_spent_money_makes_a_request_not_fit_even_alone() -> None:
    budget, tally = _budget(1.0)
    tally.record(0.9)
    assert not budget.fits_alone(_request(0.2))
    assert budget.reserve(_request(0.2)) is None
    assert budget.fits_alone(_request(0.1))


def test_unpriced_requests_and_results_count_as_free() -> None:
    budget, tally = _budget(0.01)
    assert budget.reserve(_request(None)) == 0.0
    tally.record(None)
    assert budget.spent_usd == 0.0


@given(st.lists(st.tuples(st.floats(0, 0.5), st.floats(0, 1)), max_size=60))
def test_spent_plus_reserved_never_passes_the_cap(attempts: list[tuple[float, float]]) -> None:
    budget, tally = _budget(1.0)
    held: list[float] = []
    for worst, share in attempts:
        reserved = budget.reserve(_request(worst))
        if reserved is not None:
            held.append(reserved)
        assert budget.spent_usd + budget.reserved_usd <= 1.0 + 1e-9
        if held and share > 0.5:  # an attempt ends, costing part of its worst case
            done = held.pop(0)
            budget.release(done)
            tally.record(done * share)
        assert budget.spent_usd + budget.reserved_usd <= 1.0 + 1e-9
