"""200s that break the API's promises: usage as strings/floats, no choices, no message, and
a forced token missing from its own top_logprobs."""

from __future__ import annotations

import math
from typing import Any

import aiohttp
import openai
import pytest

from batchchat.simulator import key_of
from batchchat.simulator.answers import FORCED_P, split_tokens
from batchchat.spec import FaultSpec
from tests.simulator._client import chat, user
from tests.simulator.test_stream import events

LABELS = "Answer with one of: positive, negative, neutral"


def faults(**probabilities: Any) -> dict[str, Any]:
    return {"faults": FaultSpec(**probabilities)}


async def test_usage_as_strings(simulator_factory: Any, http: aiohttp.ClientSession) -> None:
    sim = await simulator_factory(**faults(usage_as_strings=1.0))
    reply = await chat(http, sim, user("x"))
    assert reply.status == 200
    usage = reply.json["usage"]
    prompt, completion = int(usage["prompt_tokens"]), int(usage["completion_tokens"])
    assert f'"prompt_tokens":"{prompt}","completion_tokens":"{completion}"'.encode() in reply.raw
    assert usage["total_tokens"] == str(prompt + completion)
    assert usage["prompt_tokens_details"] == {"cached_tokens": "0", "audio_tokens": "0"}
    assert reply.json["choices"][0]["message"]["content"]  # the answer itself is intact
    stats = sim.stats()
    assert stats["faults"] == {"usage_as_strings": 1}
    assert stats["answers"] == {key_of(user("x")): 1}  # a tolerant client can use it
    assert stats["prompt_tokens"] == prompt


async def test_usage_as_floats_keeps_integral_values(
    simulator_factory: Any, http: aiohttp.ClientSession
) -> None:
    sim = await simulator_factory(**faults(usage_as_floats=1.0))
    reply = await chat(http, sim, user("x"))
    usage = reply.json["usage"]
    prompt = int(usage["prompt_tokens"])
    assert f'"usage":{{"prompt_tokens":{prompt}.0,'.encode() in reply.raw
    assert all(isinstance(value, float) for value in usage.values() if not isinstance(value, dict))
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0.0


async def test_usage_faults_apply_to_streams_with_usage_only(
    simulator_factory: Any, http: aiohttp.ClientSession
) -> None:
    sim = await simulator_factory(**faults(usage_as_strings=1.0))
    bare = await chat(http, sim, user("x", stream=True))  # no usage to spoil: not a fault
    assert sim.stats()["faults"] == {}
    assert events(bare.raw)[0][-1] == "[DONE]"
    reply = await chat(http, sim, user("x", stream=True, stream_options={"include_usage": True}))
    chunks, _ = events(reply.raw)
    *_, usage_chunk, done = chunks
    assert (usage_chunk["choices"], done) == ([], "[DONE]")
    assert isinstance(usage_chunk["usage"]["prompt_tokens"], str)
    assert all(chunk["usage"] is None for chunk in chunks[:-2])
    assert sim.stats()["faults"] == {"usage_as_strings": 1}


async def test_empty_choices(simulator_factory: Any, http: aiohttp.ClientSession) -> None:
    sim = await simulator_factory(**faults(empty_choices=1.0))
    reply = await chat(http, sim, user("x"))
    assert (reply.status, reply.json["choices"]) == (200, [])
    assert reply.json["object"] == "chat.completion"
    assert reply.json["usage"]["completion_tokens"] > 0
    streamed = await chat(http, sim, user("x", stream=True))
    chunks, _ = events(streamed.raw)
    assert chunks[-1] == "[DONE]"
    assert len(chunks) > 2
    assert all(chunk["choices"] == [] for chunk in chunks[:-1])
    stats = sim.stats()
    assert (stats["faults"], stats["by_status"]) == ({"empty_choices": 2}, {"200": 2})
    assert stats["answered"] == 0  # no answer in it


async def test_no_message(simulator_factory: Any, http: aiohttp.ClientSession) -> None:
    sim = await simulator_factory(**faults(no_message=1.0))
    reply = await chat(http, sim, user("x", n=2))
    assert reply.status == 200
    assert reply.json["choices"] == [
        {"index": 0, "logprobs": None, "finish_reason": "stop"},
        {"index": 1, "logprobs": None, "finish_reason": "stop"},
    ]
    streamed = await chat(http, sim, user("x", stream=True))
    chunks, _ = events(streamed.raw)
    choices = [choice for chunk in chunks[:-1] for choice in chunk["choices"]]
    assert choices
    assert all("delta" not in choice for choice in choices)
    assert choices[-1]["finish_reason"] == "stop"
    assert sim.stats()["answered"] == 0


def first_entry(reply: Any) -> dict[str, Any]:
    entry: dict[str, Any] = reply.json["choices"][0]["logprobs"]["content"][0]
    return entry


async def test_a_forced_token_is_missing_from_its_own_top_logprobs(
    simulator_factory: Any, http: aiohttp.ClientSession
) -> None:
    sim = await simulator_factory(**faults(forced_token=1.0))
    plain = await chat(http, sim, user("x"))  # no logprobs asked: not a fault
    assert sim.stats()["faults"] == {}
    body = user(f"{LABELS}\n\nI love it", logprobs=True, top_logprobs=3)
    reply = await chat(http, sim, body)
    entry = first_entry(reply)
    label = reply.json["choices"][0]["message"]["content"]
    assert label in {"positive", "negative", "neutral"}
    assert entry["token"] == split_tokens(label)[0]
    assert entry["logprob"] == pytest.approx(math.log(FORCED_P))
    top = [candidate["token"] for candidate in entry["top_logprobs"]]
    assert len(top) == 3
    assert entry["token"] not in top
    # what the model wanted: the other labels first
    rivals = {split_tokens(other)[0] for other in ("positive", "negative", "neutral")} - {
        entry["token"]
    }
    assert set(top[:2]) == rivals
    later = reply.json["choices"][0]["logprobs"]["content"][1:]
    assert all(e["token"] in [c["token"] for c in e["top_logprobs"]] for e in later)
    stats = sim.stats()
    assert stats["faults"] == {"forced_token": 1}
    assert stats["answers"] == {key_of(user("x")): 1, key_of(body): 1}
    assert plain.json["choices"][0]["logprobs"] is None


async def test_a_forced_token_streams_the_same(simulator_factory: Any) -> None:
    sim = await simulator_factory(**faults(forced_token=1.0))
    client = openai.AsyncOpenAI(base_url=sim.base_url, api_key="unused", max_retries=0)
    async with client:
        chunks = [
            chunk
            async for chunk in await client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "x"}],
                logprobs=True,
                top_logprobs=5,
                stream=True,
            )
        ]
    entries = [
        e for c in chunks for ch in c.choices if ch.logprobs for e in ch.logprobs.content or []
    ]
    first = entries[0]
    assert first.logprob == pytest.approx(math.log(FORCED_P))
    assert len(first.top_logprobs) == 5
    assert first.token not in {candidate.token for candidate in first.top_logprobs}
    assert first.top_logprobs[0].logprob == pytest.approx(math.log(0.5))


async def test_a_tool_call_has_no_token_to_force(
    simulator_factory: Any, http: aiohttp.ClientSession
) -> None:
    sim = await simulator_factory(**faults(forced_token=1.0))
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    reply = await chat(http, sim, user("x", logprobs=True, tools=[tool], tool_choice="required"))
    assert reply.json["choices"][0]["finish_reason"] == "tool_calls"
    assert sim.stats()["faults"] == {}
