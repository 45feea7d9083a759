"""Budget accounting: spent + in-flight worst case never passes the cap."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from batchchat.execute.budget import Budget
from batchchat.models import ChatRequest, ChatResult


def _request(worst: float | None = 0.1, row: str = "r") -> ChatRequest:
    body = {"model": "m", "messages": [], "worst": worst}
    return ChatRequest(row, 0, f"{row}#0", body, "h", 10, 10)


def _worst(request: ChatRequest) -> float | None:
    value = request.body["worst"]
    return None if value is None else float(value)


def _budget(cap: float) -> Budget:
    return Budget(cap, cost_of=lambda result: result.cost_usd, worst_case=_worst)


def test_reservations_fit_until_the_cap() -> None:
    budget = _budget(1.0)
    assert budget.reserve(_request(0.4)) == 0.4
    assert budget.reserve(_request(0.4)) == 0.4
    assert budget.reserve(_request(0.4)) is None  # 1.2 > 1.0
    assert budget.reserved_usd == 0.8
    assert budget.fits_alone(_request(0.4))  # it would fit once the others are done


def test_released_reservations_and_real_costs_are_what_counts() -> None:
    budget = _budget(1.0)
    reserved = budget.reserve(_request(0.5))
    assert reserved is not None
    budget.release(reserved)
    budget.record(0.05)  # the attempt cost a tenth of its worst case
    assert budget.spent_usd == 0.05
    assert budget.reserved_usd == 0.0
    assert budget.remaining_usd == 0.95


def test_spent_money_makes_a_request_not_fit_even_alone() -> None:
    budget = _budget(1.0)
    budget.record(0.9)
    assert not budget.fits_alone(_request(0.2))
    assert budget.reserve(_request(0.2)) is None
    assert budget.fits_alone(_request(0.1))


def test_unpriced_requests_and_results_count_as_free() -> None:
    budget = _budget(0.01)
    assert budget.reserve(_request(None)) == 0.0
    budget.record(None)
    assert budget.spent_usd == 0.0


def test_cost_of_is_exposed_for_the_executor() -> None:
    budget = _budget(1.0)
    now = datetime.now(UTC)
    result = ChatResult(_request(), None, None, 200, 1, 1.0, now, now, cost_usd=0.3)
    assert budget.cost_of(result) == 0.3


@given(st.lists(st.tuples(st.floats(0, 0.5), st.floats(0, 1)), max_size=60))
def test_spent_plus_reserved_never_passes_the_cap(attempts: list[tuple[float, float]]) -> None:
    budget = _budget(1.0)
    held: list[float] = []
    for worst, share in attempts:
        reserved = budget.reserve(_request(worst))
        if reserved is not None:
            held.append(reserved)
        assert budget.spent_usd + budget.reserved_usd <= 1.0 + 1e-9
        if held and share > 0.5:  # an attempt ends, costing part of its worst case
            done = held.pop(0)
            budget.release(done)
            budget.record(done * share)
        assert budget.spent_usd + budget.reserved_usd <= 1.0 + 1e-9
