"""Re-asks through the transport seam: named handlers play a model that answers wrong."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import orjson
import pytest

from batchchat.answers.check import answer_check
from batchchat.execute.budget import Budget
from batchchat.execute.reask import Asked, Reasker, Verdict
from batchchat.execute.transport import HTTPRequest, HTTPResponse
from batchchat.models import ChatRequest, ChatResponse, Usage
from batchchat.spec import ReaskSpec
from tests.execute.test_executor import Run, _completion, _error, _requests, _spec

SCHEMA = {
    "type": "object",
    "required": ["answer"],
    "properties": {"answer": {"type": "integer"}},
    "additionalProperties": False,
}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}}


def json_check() -> Any:
    spec = _spec(request={"response_format": RESPONSE_FORMAT}, output={"parse": "json"})
    check = answer_check(spec)
    assert check is not None
    return check


def per_answer(request: ChatRequest, response: ChatResponse) -> float:
    return 0.001 * (response.usage.completion_tokens or 0)


def reasker(count: int = 2, **settings: Any) -> Reasker:
    return Reasker(ReaskSpec(count=count, **settings), json_check(), per_answer)


def _messages(request: HTTPRequest) -> list[dict[str, Any]]:
    return list(orjson.loads(request.body)["messages"])


def _ok(content: str, finish: str = "stop", completion_tokens: int = 5) -> HTTPResponse:
    return HTTPResponse(200, {}, _completion(content, finish, (10, completion_tokens)))


# -- named handlers: models -----------------------------------------------------------------------


def prose_then_json(request: HTTPRequest) -> HTTPResponse:
    """Prose first; once shown its answer and the error (a repair turn), valid JSON."""
    if len(_messages(request)) == 1:
        return _ok("Sure! The answer is 42.")
    return _ok('{"answer": 42}', completion_tokens=7)


def always_prose(request: HTTPRequest) -> HTTPResponse:
    return _ok(f"Sure, here you go ({len(_messages(request))} messages).")


# -- tests ----------------------------------------------------------------------------------------


async def test_a_row_whose_answer_does_not_parse_is_asked_again_with_a_repair_turn() -> None:
    run = Run()
    sent: list[HTTPRequest] = []

    def model(request: HTTPRequest) -> HTTPResponse:
        sent.append(request)
        return prose_then_json(request)

    stats = await run(model, _requests(3), reask=reasker())

    assert len(run.results) == 3
    for result in run.results:
        assert result.response is not None
        assert result.response.choices[0].content == '{"answer": 42}'
        assert result.reasks == 1
        assert result.ask_costs_usd == [pytest.approx(0.005), pytest.approx(0.007)]
        assert result.cost_usd == pytest.approx(0.012)
        assert result.attempts == 2
        assert result.request.body["messages"] == [
            {"role": "user", "content": f"row {result.request.row_id}"}
        ]  # the row's planned request, not the re-ask
    repair = [r for r in sent if len(_messages(r)) == 3]
    assert len(repair) == 3
    assistant, user = _messages(repair[0])[1:]
    assert assistant == {"role": "assistant", "content": "Sure! The answer is 42."}
    assert user["role"] == "user"
    assert "not valid JSON" in user["content"]
    assert user["content"].endswith("Answer again, with only the corrected answer.")
    assert (stats.reasks, stats.retries, stats.requests_sent) == (3, 0, 6)
    assert stats.cost_usd == pytest.approx(3 * 0.012)
    assert stats.reask_cost_usd == pytest.approx(3 * 0.007)
    assert (stats.prompt_tokens, stats.completion_tokens) == (60, 36)


async def test_reasks_stop_at_the_count_and_the_row_keeps_its_last_answer() -> None:
    run = Run()
    stats = await run(always_prose, _requests(2), reask=reasker(count=2))

    assert len(run.results) == 2
    for result in run.results:
        assert result.reasks == 2
        assert len(result.ask_costs_usd or []) == 3
        assert result.response is not None
        assert result.response.choices[0].content == "Sure, here you go (3 messages)."
        assert result.error is None  # an answer came: the parse status tells it is unusable
    assert stats.reasks == 4
    assert stats.results_ok == 2


async def test_transport_retries_and_reasks_are_counted_apart() -> None:
    run = Run()
    seen: Counter[int] = Counter()

    def flaky_model(request: HTTPRequest) -> HTTPResponse:
        turns = len(_messages(request))
        seen[turns] += 1
        if turns == 1 and seen[turns] == 1:
            return _error(503)
        return prose_then_json(request)

    stats = await run(flaky_model, _requests(1), reask=reasker())

    (result,) = run.results
    assert (result.attempts, result.reasks) == (3, 1)
    assert (stats.retries, stats.reasks, stats.requests_sent) == (1, 1, 3)
    assert stats.status_counts == {503: 1, 200: 2}


async def test_an_answer_cut_by_the_token_limit_is_asked_again_with_a_higher_limit() -> None:
    run = Run()
    limits: list[int] = []

    def terse_model(request: HTTPRequest) -> HTTPResponse:
        body = orjson.loads(request.body)
        limits.append(body["max_tokens"])
        if body["max_tokens"] < 80:
            return _ok('{"answer": 4', finish="length")
        return _ok('{"answer": 42}')

    await run(terse_model, _requests(1, max_tokens=20), reask=reasker(count=3))

    assert limits == [20, 40, 80]  # raised again each time it was cut again
    (result,) = run.results
    assert result.reasks == 2
    assert result.request.max_output_tokens == 20  # the planned request


async def test_without_a_repair_turn_the_same_request_goes_again() -> None:
    run = Run()
    bodies: list[bytes] = []

    def model(request: HTTPRequest) -> HTTPResponse:
        bodies.append(request.body)
        return _ok("prose" if len(bodies) == 1 else '{"answer": 1}')

    await run(model, _requests(1), reask=reasker(repair=False))

    assert len(bodies) == 2
    assert bodies[0] == bodies[1]
    assert run.results[0].reasks == 1


async def test_a_reask_that_fails_for_good_keeps_the_answer_already_paid_for() -> None:
    run = Run()

    def refuses_repairs(request: HTTPRequest) -> HTTPResponse:
        if len(_messages(request)) == 1:
            return _ok("no json here", completion_tokens=9)
        return _error(400, "invalid_request_error")

    stats = await run(refuses_repairs, _requests(2), reask=reasker())

    assert len(run.results) == 2
    for result in run.results:
        assert result.error is None
        assert result.http_status == 200  # the answer's status, not the failed re-ask's
        assert result.response is not None
        assert result.response.choices[0].content == "no json here"
        assert result.reasks == 1  # sent, not answered
        assert result.ask_costs_usd == [pytest.approx(0.009)]
        assert result.cost_usd == pytest.approx(0.009)
    assert (stats.results_ok, stats.results_error, stats.reasks) == (2, 0, 2)


async def test_a_stop_before_the_reask_goes_keeps_every_paid_answer_once() -> None:
    run = Run()
    stop = asyncio.Event()

    def answers_then_stop(request: HTTPRequest) -> HTTPResponse:
        stop.set()  # interrupted as the first answers come in: the re-asks never go
        return always_prose(request)

    await run(answers_then_stop, _requests(8), reask=reasker(), stop=stop)

    rows = Counter(result.request.row_id for result in run.results)
    assert all(count == 1 for count in rows.values())
    for result in run.results:
        assert result.response is not None
        assert result.ask_costs_usd is not None
        assert result.reasks == len(result.ask_costs_usd) - 1


async def test_many_rows_each_end_exactly_once() -> None:
    run = Run(limits={"max_concurrency": 8})

    asked: Counter[int] = Counter()

    def right_the_third_time(request: HTTPRequest) -> HTTPResponse:
        row = int(_messages(request)[0]["content"].split()[1])
        asked[row] += 1
        if row % 3 == 0 and asked[row] < 3:
            return _ok("prose")
        return _ok('{"answer": 1}')

    stats = await run(right_the_third_time, _requests(60), reask=reasker(count=3))

    rows = Counter(result.request.row_id for result in run.results)
    assert len(rows) == 60 and set(rows.values()) == {1}
    reasked = {r.request.row_id: r.reasks for r in run.results if r.reasks}
    assert set(reasked.values()) == {2}
    assert len(reasked) == 20
    assert stats.reasks == 40


def test_reask_request_keeps_the_row_identity_and_adds_two_turns() -> None:
    original = _requests(1, max_completion_tokens=100, seed=7)[0]
    answer = ChatResponse(None, "m", None, [], Usage(), None)
    follow = reasker(count=1).reask_request(original, answer, Verdict("truncated", "cut"))
    assert follow.custom_id == original.custom_id
    assert follow.request_hash == original.request_hash
    assert follow.body["max_completion_tokens"] == 200
    assert follow.max_output_tokens == 200
    assert follow.est_prompt_tokens > original.est_prompt_tokens
    assert follow.body["messages"][-2:] == [
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "cut\nAnswer again, with only the corrected answer."},
    ]
    assert original.body["messages"] == [{"role": "user", "content": "row 0"}]  # not mutated


def test_a_custom_repair_prompt_says_the_error_where_it_asks() -> None:
    ask = Reasker(ReaskSpec(repair_prompt="Wrong: {error} Try again."), json_check(), per_answer)
    turns = ask.repair_turns(ChatResponse(None, None, None, [], Usage()), Verdict("x", "E"))
    assert turns[-1]["content"] == "Wrong: E Try again."


def test_asked_counts_its_reasks() -> None:
    asked = Asked(_requests(1)[0], 0.0)
    assert asked.reasks == 0
    asked.answers += [ChatResponse(None, None, None, [], Usage())] * 3
    assert asked.reasks == 2


async def test_reasks_still_queued_when_the_run_stops_end_with_the_paid_answer() -> None:
    run = Run(limits={"max_concurrency": 1})
    stop = asyncio.Event()

    def stops_at_the_first_repair(request: HTTPRequest) -> HTTPResponse:
        if len(_messages(request)) == 3:
            stop.set()
            return _error(503)  # would be retried, but the run is stopping
        return always_prose(request)

    await run(stops_at_the_first_repair, _requests(4), reask=reasker(), stop=stop)

    rows = Counter(result.request.row_id for result in run.results)
    assert set(rows.values()) == {1}
    for result in run.results:
        assert result.error is None and result.response is not None
        assert result.response.choices[0].content == "Sure, here you go (1 messages)."
    sent_repairs = [r for r in run.results if r.reasks == 1]
    assert len(sent_repairs) >= 1  # the one that went out counts, answered or not


async def test_a_reask_cut_off_in_flight_at_the_end_keeps_the_paid_answer() -> None:
    run = Run()
    stop = asyncio.Event()

    async def hangs_on_repairs(request: HTTPRequest) -> HTTPResponse:
        if len(_messages(request)) == 3:
            stop.set()
            await asyncio.Event().wait()  # never answers: the drain gives up on it
        return always_prose(request)

    stats = await run(
        hangs_on_repairs, _requests(3), reask=reasker(), stop=stop, drain_timeout_s=0.05
    )

    assert sorted(r.request.row_id for r in run.results) == ["0", "1", "2"]
    assert all(r.response is not None and r.reasks == 1 for r in run.results)
    assert stats.results_ok == 3 and stats.in_flight == 0


async def test_a_budget_that_cannot_pay_the_reask_keeps_the_paid_answer() -> None:
    run = Run(limits={"max_concurrency": 1})
    budget = Budget(0.02, worst_case=lambda request: 0.006, spent=lambda: run.stats.cost_usd)

    stats = await run(always_prose, _requests(6), reask=reasker(), budget=budget)

    assert stats.stop_reason == "budget"
    assert stats.cost_usd <= 0.02
    rows = Counter(result.request.row_id for result in run.results)
    assert set(rows.values()) == {1}  # every paid answer reached the results, once
    assert sum(len(r.ask_costs_usd or []) for r in run.results) == stats.requests_sent
    assert any(r.reasks == 0 and r.ask_costs_usd == [pytest.approx(0.005)] for r in run.results)
