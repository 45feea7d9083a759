"""Wrong answers over HTTP: unparsable JSON, schema-breaking JSON, off-label answers.

Each is a complete 200 a client must check itself; each is drawn per arrival of a
request, so the same request asked again (or a repair turn) can come back right.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest
from jsonschema import validators

from batchchat.simulator import misanswers
from batchchat.spec import FaultSpec
from tests.simulator._client import chat, user

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["sentiment", "score"],
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative"]},
        "score": {"type": "integer", "minimum": 0, "maximum": 5},
    },
}
JSON_SCHEMA = {
    "type": "json_schema",
    "json_schema": {"name": "s", "strict": True, "schema": SCHEMA},
}
LABELS = "Answer with one of: positive, negative, neutral"


def labelled(text: str, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "system", "content": LABELS}, {"role": "user", "content": text}]
    return {"model": "gpt-4o-mini", "messages": messages, **extra}


def faults(**probabilities: Any) -> dict[str, Any]:
    return {"faults": FaultSpec(**probabilities)}


def _parses(content: str) -> bool:
    try:
        orjson.loads(content)
    except orjson.JSONDecodeError:
        return False
    return True


async def test_invalid_json_spoils_a_share_of_json_answers(
    simulator_factory: Any, http: aiohttp.ClientSession
) -> None:
    sim = await simulator_factory(**faults(invalid_json=0.3, seed=3))
    contents = [
        (await chat(http, sim, user(f"row {i}", response_format=JSON_SCHEMA))).json["choices"][0][
            "message"
        ]["content"]
        for i in range(200)
    ]
    broken = [c for c in contents if not _parses(c)]
    assert 40 <= len(broken) <= 80
    assert sim.stats()["faults"] == {"invalid_json": len(broken)}
    assert len(sim.stats()["answers"]) == 200  # each is an answer, paid for


async def test_schema_mismatch_is_json_that_the_schema_rejects(
    simulator_factory: Any, http: aiohttp.ClientSession
) -> None:
    sim = await simulator_factory(**faults(schema_mismatch=1.0))
    validator = validators.validator_for(SCHEMA)(SCHEMA)
    for i in range(20):
        reply = await chat(http, sim, user(f"row {i}", response_format=JSON_SCHEMA))
        value = orjson.loads(reply.json["choices"][0]["message"]["content"])
        assert not validator.is_valid(value)
        assert reply.json["choices"][0]["finish_reason"] == "stop"


async def test_off_label_answers_name_no_label(
    simulator_factory: Any, http: aiohttp.ClientSession
) -> None:
    sim = await simulator_factory(**faults(off_label=1.0))
    reply = await chat(http, sim, labelled("great", logprobs=True, top_logprobs=2))
    content = reply.json["choices"][0]["message"]["content"]
    assert content == "unsure"
    tokens = reply.json["choices"][0]["logprobs"]["content"]
    assert "".join(t["token"] for t in tokens) == content
    as_json = await chat(http, sim, labelled("fine", response_format={"type": "json_object"}))
    assert orjson.loads(as_json.json["choices"][0]["message"]["content"]) == {"label": "unsure"}


async def test_answer_faults_leave_requests_they_cannot_apply_to_alone(
    simulator_factory: Any, http: aiohttp.ClientSession
) -> None:
    sim = await simulator_factory(**faults(invalid_json=0.4, schema_mismatch=0.3, off_label=0.3))
    reply = await chat(http, sim, user("plain text, no labels"))
    assert reply.status == 200
    assert sim.stats()["faults"] == {}
    json_object = await chat(http, sim, user("x", response_format={"type": "json_object"}))
    content = json_object.json["choices"][0]["message"]["content"]
    assert _parses(content) or sim.stats()["faults"] == {"invalid_json": 1}


async def test_the_same_request_asked_again_draws_again(
    simulator_factory: Any, http: aiohttp.ClientSession
) -> None:
    sim = await simulator_factory(**faults(invalid_json=0.5, seed=11))
    body = user("the same row", response_format=JSON_SCHEMA)
    outcomes = [
        _parses((await chat(http, sim, body)).json["choices"][0]["message"]["content"])
        for _ in range(30)
    ]
    assert set(outcomes) == {True, False}
    again = await simulator_factory(**faults(invalid_json=0.5, seed=11))
    replay = [
        _parses((await chat(http, again, body)).json["choices"][0]["message"]["content"])
        for _ in range(30)
    ]
    assert replay == outcomes  # per request and arrival: the same run gets the same answers


@pytest.mark.parametrize("seed", range(6))
def test_unparsable_never_parses(seed: int) -> None:
    valid = orjson.dumps({"a": [1, 2], "b": "x"}).decode()
    assert not _parses(misanswers.unparsable(valid, bytes([seed] * 8)))


def test_breaking_tries_until_the_schema_refuses() -> None:
    only_strings = {"type": "object", "properties": {"a": {"type": "string"}}}
    validator = validators.validator_for(only_strings)(only_strings)
    spoilt = misanswers.breaking({"a": "x"}, only_strings, bytes(16))
    assert not validator.is_valid(spoilt)
    assert misanswers.breaking({"a": 1}, {}, bytes(16)) == {"a": 1}  # anything goes


def test_an_off_label_answer_avoids_every_label() -> None:
    assert misanswers.off_label(["positive", "negative"]) == "unsure"
    assert misanswers.off_label(["unsure", "other"]) == "I cannot tell from this text."
    every = ["unsure", "cannot", "n/a", "depends"]
    assert misanswers.off_label(every) == "?"
    assert misanswers.off_label_json(["a"]) == '{"label":"unsure"}'
