"""Re-asks in a pool: each answer is paid at the price of the endpoint that gave it, and a row
that keeps an earlier answer names the endpoint that gave that one."""

from __future__ import annotations

from collections import Counter

import orjson

from batchchat.execute.reask import Reasker, Verdict
from batchchat.execute.transport import HTTPRequest, HTTPResponse
from batchchat.models import ChatRequest, ChatResponse
from batchchat.spec import ReaskSpec
from tests.execute.test_pool import Member, PoolRun, _completion, _error, _row

PRICES = {"a": 1.0, "b": 2.0}


def json_only(request: ChatRequest, response: ChatResponse) -> Verdict | None:
    content = response.choices[0].content if response.choices else None
    return None if content and content.startswith("{") else Verdict("invalid_json", "not JSON")


def never_priced_here(request: ChatRequest, response: ChatResponse) -> float:
    """The job-wide price: a pool member's own must win over it."""
    return 100.0


def reasker() -> Reasker:
    return Reasker(ReaskSpec(count=1), json_only, never_priced_here)


def _is_repair(request: HTTPRequest) -> bool:
    return len(orjson.loads(request.body)["messages"]) > 1


def prose_then_json(request: HTTPRequest) -> HTTPResponse:
    content = '{"answer": 1}' if _is_repair(request) else f"answer {_row(request)}"
    return HTTPResponse(200, {}, _completion(content))


def prose_refusing_repairs(request: HTTPRequest) -> HTTPResponse:
    if _is_repair(request):
        return _error(400, "invalid_request_error")
    return HTTPResponse(200, {}, _completion(f"answer {_row(request)}"))


def asked_where(run: PoolRun, *, repair: bool) -> dict[int, str]:
    """Row → the endpoint sent its first ask (or its re-ask)."""
    return {
        _row(sent): name
        for name, member in run.members.items()
        for sent in member.sent
        if _is_repair(sent) == repair
    }


async def test_each_answer_of_a_reasked_row_is_priced_by_the_endpoint_that_gave_it() -> None:
    run = PoolRun(Member("a", prose_then_json), Member("b", prose_then_json))
    stats = await run(60, prices=PRICES, reask=reasker())

    assert run.rows() == list(range(60)) and all(r.ok for r in run.results)
    first, second = asked_where(run, repair=False), asked_where(run, repair=True)
    assert set(first.values()) == {"a", "b"}  # both endpoints answered first asks
    for result in run.results:
        row = int(result.request.row_id)
        assert result.reasks == 1
        assert result.ask_costs_usd == [PRICES[first[row]], PRICES[second[row]]]
        assert result.cost_usd == PRICES[first[row]] + PRICES[second[row]]
        assert result.endpoint == second[row]  # the final answer's
    assert stats.cost_usd == sum(r.cost_usd or 0.0 for r in run.results)
    ended = Counter(second.values())
    assert {name: s.results_ok for name, s in stats.endpoints.items()} == {
        "a": ended["a"],
        "b": ended["b"],
    }


async def test_a_refused_reask_keeps_the_paid_answer_and_names_the_endpoint_that_gave_it() -> None:
    run = PoolRun(Member("a", prose_refusing_repairs), Member("b", prose_refusing_repairs))
    stats = await run(40, prices=PRICES, reask=reasker())

    assert run.rows() == list(range(40))
    first = asked_where(run, repair=False)
    assert set(first.values()) == {"a", "b"}
    for result in run.results:
        row = int(result.request.row_id)
        assert result.ok and result.response is not None
        assert result.response.choices[0].content == f"answer {row}"  # the paid answer
        assert result.reasks == 1 and result.ask_costs_usd == [PRICES[first[row]]]
        assert result.endpoint == first[row]
    answered = Counter(first.values())
    assert {name: s.results_ok for name, s in stats.endpoints.items()} == {
        "a": answered["a"],
        "b": answered["b"],
    }
    assert all(s.results_error == 0 for s in stats.endpoints.values())
