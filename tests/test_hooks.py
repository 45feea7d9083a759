"""What the runner hands its executors: prices at the right tier, the budget, the re-asker."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from batchchat.hooks import budget_of, cost_of, reasker_of
from batchchat.job import compile_job
from batchchat.models import ChatRequest, ChatResponse, ChatResult, ExecutionStats, Usage
from batchchat.pricing import PriceTable
from batchchat.spec import BudgetSpec, load_spec
from tests.batchapi._jobs import batch_spec

PRICES = {"gpt-4o-mini": {"input": 1.0, "output": 2.0}}  # batch and flex: half, by default
USAGE = Usage(1_000_000, 1_000_000)


def answered(body: dict[str, Any]) -> ChatResult:
    request = ChatRequest("r1", 0, "r1#0", {"model": "gpt-4o-mini", **body}, "h", 10, 10)
    response = ChatResponse("c1", "gpt-4o-mini", None, [], USAGE)
    now = datetime.now(UTC)
    return ChatResult(request, response, None, 200, 1, 1.0, now, now)


@pytest.mark.parametrize(
    ("body", "batch", "expected"),
    [
        ({}, False, 3.0),  # list prices
        ({"service_tier": "flex"}, False, 1.5),
        ({}, True, 1.5),  # batch mode: batch prices, whatever the body says
        ({"service_tier": "flex"}, True, 1.5),
    ],
)
def test_an_answer_costs_what_its_tier_charges(
    body: dict[str, Any], batch: bool, expected: float
) -> None:
    spec = load_spec(
        {"input": {"path": "x.jsonl"}, "request": {"model": "m", "messages": []}, "pricing": PRICES}
    )
    price = cost_of(PriceTable.from_spec(spec), batch=batch)
    assert price(answered(body)) == pytest.approx(expected)


def test_an_error_has_no_cost_never_zero() -> None:
    result = answered({})
    result.response = None
    assert cost_of(PriceTable({}))(result) is None


def test_no_budget_without_one_and_the_spent_money_is_the_runs() -> None:
    stats = ExecutionStats(run_id="r", started_at=datetime.now(UTC))
    assert budget_of(None, PriceTable({}), stats) is None
    budget = budget_of(BudgetSpec(max_cost_usd=1.0), PriceTable({}), stats)
    assert budget is not None
    stats.cost_usd = 0.25
    assert budget.spent_usd == 0.25


def test_a_re_asker_only_for_a_job_that_checks_and_re_asks(tmp_path: Path) -> None:
    plain = compile_job(batch_spec(tmp_path, rows=2, mode="online"))
    assert reasker_of(plain) is None
    checked = compile_job(
        batch_spec(tmp_path, rows=2, mode="online", output={"parse": "json", "reask": 2})
    )
    reasker = reasker_of(checked)
    assert reasker is not None and reasker.spec.count == 2
