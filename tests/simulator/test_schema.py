"""Structured output and tool calls: content and arguments conform to the given JSON Schema."""

from __future__ import annotations

import random
from typing import Any

import aiohttp
import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchchat.simulator import SimulatorServer
from batchchat.simulator.schema import instance_of
from tests.simulator._client import chat, user

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 3, "maxLength": 12},
        "age": {"type": "integer", "minimum": 18, "maximum": 99},
        "score": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "active": {"type": "boolean"},
        "mood": {"type": "string", "enum": ["happy", "sad", "calm"]},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 4},
        "nickname": {"type": ["string", "null"]},
        "email": {"type": "string", "format": "email"},
        "joined": {"type": "string", "format": "date-time"},
        "address": {"$ref": "#/$defs/address"},
        "kind": {"const": "person"},
        "even": {"type": "integer", "multipleOf": 2},
        "half": {"type": "number", "multipleOf": 0.5, "minimum": 1, "maximum": 3},
        "pet": {"anyOf": [{"type": "string"}, {"$ref": "#/$defs/address"}]},
        "both": {
            "allOf": [
                {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                {"properties": {"b": {"type": "string"}}, "required": ["b"]},
            ]
        },
        "ids": {
            "type": "array",
            "items": {"enum": [1, 2, 3, 4]},
            "minItems": 3,
            "uniqueItems": True,
        },
    },
    "required": ["name", "age", "score", "active", "mood", "tags", "nickname", "address", "kind"],
    "additionalProperties": False,
    "$defs": {
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "string", "maxLength": 5}},
            "required": ["city", "zip"],
            "additionalProperties": False,
        }
    },
}

TREE = {
    "type": "object",
    "properties": {
        "value": {"type": "integer"},
        "children": {"type": "array", "items": {"$ref": "#"}},
    },
    "required": ["value", "children"],
}


def schema_request(schema: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": schema, "strict": True},
    }
    return user("fill the form", seed=seed, response_format=response_format)


@pytest.mark.parametrize("schema", [PERSON, TREE], ids=["person", "recursive"])
def test_generated_values_conform(schema: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    for seed in range(40):
        validator.validate(instance_of(schema, random.Random(seed)))


async def test_json_schema_content_conforms_and_varies_with_the_seed(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    values = []
    for seed in range(5):
        reply = await chat(http, simulator, schema_request(PERSON, seed))
        assert reply.status == 200, reply.json
        value = orjson.loads(reply.json["choices"][0]["message"]["content"])
        jsonschema.validate(value, PERSON)
        values.append(value)
    assert len({orjson.dumps(v) for v in values}) == 5
    again = await chat(http, simulator, schema_request(PERSON, 0))
    assert orjson.loads(again.json["choices"][0]["message"]["content"]) == values[0]


async def test_json_object_is_a_json_object(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    reply = await chat(http, simulator, user("as json", response_format={"type": "json_object"}))
    assert isinstance(orjson.loads(reply.json["choices"][0]["message"]["content"]), dict)


# -- Hypothesis: random simple schemas ---------------------------------------------------------

_scalars = st.one_of(
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.builds(
        lambda low, span: {"type": "integer", "minimum": low, "maximum": low + span},
        st.integers(-1000, 1000),
        st.integers(0, 50),
    ),
    st.builds(
        lambda low, span: {"type": "number", "minimum": low, "maximum": low + span},
        st.floats(-1e3, 1e3, allow_nan=False),
        st.floats(0, 10, allow_nan=False),
    ),
    st.builds(
        lambda low, extra: {"type": "string", "minLength": low, "maxLength": low + extra},
        st.integers(0, 20),
        st.integers(0, 20),
    ),
    st.lists(st.text(max_size=5), min_size=1, max_size=4, unique=True).map(lambda xs: {"enum": xs}),
)


def _compound(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    objects = st.dictionaries(
        st.text("abcdefgh", min_size=1, max_size=6), children, max_size=4
    ).flatmap(
        lambda props: st.builds(
            lambda required: {"type": "object", "properties": props, "required": required},
            st.lists(st.sampled_from(sorted(props)), unique=True) if props else st.just([]),
        )
    )
    arrays = st.builds(
        lambda items, low: {"type": "array", "items": items, "minItems": low, "maxItems": low + 3},
        children,
        st.integers(0, 3),
    )
    return st.one_of(objects, arrays)


@settings(max_examples=150, deadline=None)
@given(st.recursive(_scalars, _compound, max_leaves=12), st.integers(0, 2**32))
def test_any_simple_schema_gets_a_conforming_value(schema: dict[str, Any], seed: int) -> None:
    jsonschema.validate(instance_of(schema, random.Random(seed)), schema)


# -- tools --------------------------------------------------------------------------------------

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
CLOCK = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string"}},
            "required": ["zone"],
        },
    },
}


def check_calls(message: dict[str, Any], names: list[str]) -> None:
    calls = message["tool_calls"]
    assert message["content"] is None
    assert [call["function"]["name"] for call in calls] == names
    for call in calls:
        assert call["type"] == "function"
        assert call["id"].startswith("call_")
        schema = {"get_weather": WEATHER, "get_time": CLOCK}[call["function"]["name"]]
        jsonschema.validate(
            orjson.loads(call["function"]["arguments"]), schema["function"]["parameters"]
        )


@pytest.mark.parametrize(
    ("choice", "text", "names"),
    [
        ({"type": "function", "function": {"name": "get_time"}}, "hello", ["get_time"]),
        ("auto", "use get_weather and get_time please", ["get_weather", "get_time"]),
        ("required", "call get_time", ["get_time"]),
    ],
)
async def test_tool_calls_satisfy_the_parameter_schema(
    simulator: SimulatorServer,
    http: aiohttp.ClientSession,
    choice: Any,
    text: str,
    names: list[str],
) -> None:
    reply = await chat(http, simulator, user(text, tools=[WEATHER, CLOCK], tool_choice=choice))
    result = reply.json["choices"][0]
    assert result["finish_reason"] == "tool_calls"
    check_calls(result["message"], names)
    usage = reply.json["usage"]
    assert usage["completion_tokens"] > 0


async def test_required_without_a_named_tool_still_calls_one(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    reply = await chat(
        http, simulator, user("anything", tools=[WEATHER, CLOCK], tool_choice="required")
    )
    calls = reply.json["choices"][0]["message"]["tool_calls"]
    assert len(calls) == 1
    check_calls(reply.json["choices"][0]["message"], [calls[0]["function"]["name"]])


async def test_parallel_tool_calls_false_calls_one(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    body = user("get_weather and get_time", tools=[WEATHER, CLOCK], parallel_tool_calls=False)
    reply = await chat(http, simulator, body)
    check_calls(reply.json["choices"][0]["message"], ["get_weather"])


@pytest.mark.parametrize(
    ("choice", "messages"),
    [
        ("auto", [{"role": "user", "content": "no tool mentioned"}]),
        ("none", [{"role": "user", "content": "get_weather please"}]),
        (
            "auto",
            [
                {"role": "user", "content": "get_weather please"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            ],
        ),
    ],
)
async def test_text_answers_when_no_tool_is_due(
    simulator: SimulatorServer,
    http: aiohttp.ClientSession,
    choice: str,
    messages: list[dict[str, Any]],
) -> None:
    body = {"model": "m", "messages": messages, "tools": [WEATHER], "tool_choice": choice}
    reply = await chat(http, simulator, body)
    result = reply.json["choices"][0]
    assert result["finish_reason"] == "stop"
    assert "tool_calls" not in result["message"]
    assert result["message"]["content"]
