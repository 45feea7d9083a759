"""Strict validation and auth, over HTTP: 400/401 with OpenAI-shaped error bodies."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from batchchat.simulator import SimulatorServer
from tests.simulator._client import chat, get, user

MSG = [{"role": "user", "content": "hi"}]
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}

# (body, param, code) of requests a strict server refuses
INVALID: list[tuple[Any, str | None, str | None]] = [
    ([1, 2], None, None),
    ({"messages": MSG}, "model", None),
    ({"model": 3, "messages": MSG}, "model", "invalid_type"),
    ({"model": "m"}, "messages", "missing_required_parameter"),
    ({"model": "m", "messages": "hi"}, "messages", "invalid_type"),
    ({"model": "m", "messages": []}, "messages", "empty_array"),
    ({"model": "m", "messages": ["hi"]}, "messages[0]", "invalid_type"),
    (
        {"model": "m", "messages": [{"content": "hi"}]},
        "messages[0].role",
        "missing_required_parameter",
    ),
    (
        {"model": "m", "messages": [{"role": "bot", "content": "hi"}]},
        "messages[0].role",
        "invalid_value",
    ),
    (
        {"model": "m", "messages": [{"role": "user"}]},
        "messages[0].content",
        "missing_required_parameter",
    ),
    (
        {"model": "m", "messages": [{"role": "user", "content": 5}]},
        "messages[0].content",
        "invalid_type",
    ),
    (
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "sound"}]}]},
        "messages[0].content[0].type",
        "invalid_value",
    ),
    (
        {"model": "m", "messages": [{"role": "tool", "content": "42"}]},
        "messages[0].tool_call_id",
        "missing_required_parameter",
    ),
    (user("x", top_logprobs=3), "top_logprobs", "invalid_value"),
    (user("x", logprobs=True, top_logprobs=21), "top_logprobs", "integer_above_max_value"),
    (user("x", logprobs="yes"), "logprobs", "invalid_type"),
    (user("x", n=0), "n", "integer_below_min_value"),
    (user("x", n=129), "n", "integer_above_max_value"),
    (user("x", n=1.5), "n", "invalid_type"),
    (user("x", n=True), "n", "invalid_type"),
    (user("x", temperature=2.5), "temperature", "decimal_above_max_value"),
    (user("x", temperature="hot"), "temperature", "invalid_type"),
    (user("x", top_p=-0.1), "top_p", "decimal_below_min_value"),
    (user("x", max_tokens=0), "max_tokens", "integer_below_min_value"),
    (user("x", max_completion_tokens="9"), "max_completion_tokens", "invalid_type"),
    (user("x", stop=["a", "b", "c", "d", "e"]), "stop", "array_above_max_length"),
    (user("x", stop=[1]), "stop[0]", "invalid_type"),
    (user("x", stream="true"), "stream", "invalid_type"),
    (user("x", stream_options={"include_usage": True}), "stream_options", None),
    (user("x", response_format="json"), "response_format", "invalid_type"),
    (user("x", response_format={"type": "yaml"}), "response_format.type", "invalid_value"),
    (
        user("x", response_format={"type": "json_schema"}),
        "response_format.json_schema",
        "missing_required_parameter",
    ),
    (
        user("x", response_format={"type": "json_schema", "json_schema": {"schema": {}}}),
        "response_format.json_schema.name",
        "invalid_value",
    ),
    (
        user(
            "x", response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": []}}
        ),
        "response_format.json_schema.schema",
        "invalid_type",
    ),
    (user("x", tools=[{"type": "retrieval"}]), "tools[0].type", "invalid_value"),
    (
        user("x", tools=[{"type": "function", "function": {"name": "has space"}}]),
        "tools[0].function.name",
        "invalid_value",
    ),
    (user("x", tool_choice="auto"), "tool_choice", None),
    (user("x", tools=[TOOL], tool_choice="always"), "tool_choice", "invalid_value"),
    (
        user("x", tools=[TOOL], tool_choice={"type": "function", "function": {"name": "nope"}}),
        "tool_choice",
        None,
    ),
    (user("x", seed="1"), "seed", "invalid_type"),
    (user("x", reasoning_effort="max"), "reasoning_effort", "invalid_value"),
]


@pytest.mark.parametrize(("body", "param", "code"), INVALID)
async def test_invalid_requests_get_400_with_an_openai_error(
    simulator: SimulatorServer,
    http: aiohttp.ClientSession,
    body: Any,
    param: str | None,
    code: str | None,
) -> None:
    reply = await chat(http, simulator, body)
    assert reply.status == 400
    error = reply.json["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["code"] == code
    assert error["message"]
    assert simulator.stats()["answered"] == 0


async def test_unparsable_json_is_a_400(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    reply = await chat(http, simulator, b'{"model": ')
    assert reply.status == 400
    assert "could not parse the JSON body" in reply.json["error"]["message"]


async def test_valid_extras_and_vendor_keys_are_accepted(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "developer", "content": "be brief"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
            {"role": "user", "content": "thanks"},
        ],
        "temperature": 0,
        "top_p": 1,
        "presence_penalty": -2,
        "stop": "never",
        "user": "u-1",
        "metadata": {"k": "v"},
        "top_k": 40,  # a vLLM extension: passed through, not refused
    }
    reply = await chat(http, simulator, body)
    assert reply.status == 200, reply.json


async def test_unknown_route_is_a_json_404(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    reply = await chat(http, simulator, user("x"), path="/completions")
    assert reply.status == 404
    assert reply.json["error"]["message"] == "Invalid URL (POST /v1/completions)"


async def test_the_unprefixed_route_answers_too(
    simulator_factory: Any, http: aiohttp.ClientSession
) -> None:
    sim = await simulator_factory()
    root = sim.base_url.removesuffix("/v1")
    async with http.post(root + "/chat/completions", json=user("x")) as response:
        assert response.status == 200


# -- auth ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer sk-wrong-key"},
        {"Authorization": "Basic sk-sim-secret"},
        {"Authorization": "sk-sim-secret"},
    ],
)
async def test_a_key_is_required_when_configured(
    simulator_factory: Any, http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    sim = await simulator_factory(api_key="sk-sim-secret")
    reply = await chat(http, sim, user("x"), headers)
    assert reply.status == 401
    assert reply.json["error"]["code"] == "invalid_api_key"
    assert b"sk-wrong-key" not in reply.raw
    assert b"sk-sim-secret" not in reply.raw
    models = await get(http, sim.base_url + "/models", headers)
    assert models.status == 401


async def test_the_right_key_is_accepted(
    simulator_factory: Any, http: aiohttp.ClientSession
) -> None:
    sim = await simulator_factory(api_key="sk-sim-secret")
    reply = await chat(http, sim, user("x"), {"Authorization": "Bearer sk-sim-secret"})
    assert reply.status == 200
    # health and stats are local endpoints: no key needed
    health = await get(http, sim.base_url.removesuffix("/v1") + "/health")
    assert (health.status, health.json) == (200, {"status": "ok"})


async def test_models_lists_known_and_requested_models(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    await chat(http, simulator, {"model": "my-fine-tune", "messages": MSG})
    reply = await get(http, simulator.base_url + "/models")
    assert reply.json["object"] == "list"
    ids = {model["id"] for model in reply.json["data"]}
    assert {"my-fine-tune", "gpt-4o-mini"} <= ids
    assert all(model["object"] == "model" for model in reply.json["data"])
