"""Streaming, read as raw bytes: the exact SSE framing OpenAI uses, usage chunk, keep-alives."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from batchchat.simulator import SimulatorServer
from batchchat.spec import LatencySpec
from tests.simulator._client import chat, user

TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "parameters": {
            "type": "object",
            "properties": {"q": {"type": "string"}},
            "required": ["q"],
        },
    },
}


def events(raw: bytes) -> tuple[list[Any], int]:
    """The data events of a stream (``[DONE]`` as the string) and how many keep-alive comments."""
    assert raw.endswith(b"\n\n")
    data: list[Any] = []
    comments = 0
    for block in raw[:-2].split(b"\n\n"):
        if block == b": keep-alive":
            comments += 1
            continue
        assert block.startswith(b"data: "), block
        assert b"\n" not in block  # one line per event
        payload = block.removeprefix(b"data: ")
        data.append("[DONE]" if payload == b"[DONE]" else orjson.loads(payload))
    return data, comments


def deltas(chunks: list[dict[str, Any]], index: int, key: str) -> str:
    return "".join(
        choice["delta"].get(key) or ""
        for chunk in chunks
        for choice in chunk["choices"]
        if choice["index"] == index
    )


async def test_stream_framing_is_exactly_openais(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    plain = await chat(http, simulator, user("stream me", seed=3))
    reply = await chat(http, simulator, user("stream me", seed=3, stream=True))
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/event-stream"
    data, comments = events(reply.raw)
    assert comments == 0
    assert data[-1] == "[DONE]"
    chunks = data[:-1]
    first, *middle, last = chunks
    assert first["choices"] == [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": "", "refusal": None},
            "logprobs": None,
            "finish_reason": None,
        }
    ]
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["id"] == first["id"]
        assert chunk["created"] == first["created"]
        assert chunk["model"] == "gpt-4o-mini"
        assert chunk["system_fingerprint"] == plain.json["system_fingerprint"]
        assert "usage" not in chunk  # only with stream_options.include_usage
    for chunk in middle:
        [choice] = chunk["choices"]
        assert set(choice["delta"]) == {"content"}
        assert choice["finish_reason"] is None
    assert last["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]
    assert deltas(chunks, 0, "content") == plain.json["choices"][0]["message"]["content"]
    assert len(middle) == plain.json["usage"]["completion_tokens"]  # one token per chunk


async def test_include_usage_adds_a_usage_chunk_with_empty_choices(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    plain = await chat(http, simulator, user("count me"))
    reply = await chat(
        http, simulator, user("count me", stream=True, stream_options={"include_usage": True})
    )
    data, _ = events(reply.raw)
    *chunks, usage_chunk, done = data
    assert done == "[DONE]"
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == plain.json["usage"]
    assert all(chunk["usage"] is None for chunk in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_interleaved_choices_reassemble_by_index(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    plain = await chat(http, simulator, user("two of them", n=2))
    reply = await chat(http, simulator, user("two of them", n=2, stream=True))
    chunks = events(reply.raw)[0][:-1]
    assert [c["choices"][0]["index"] for c in chunks[:2]] == [0, 1]  # both role chunks first
    for index in (0, 1):
        assert (
            deltas(chunks, index, "content") == plain.json["choices"][index]["message"]["content"]
        )
    finishes = [c["choices"][0] for c in chunks if c["choices"][0]["finish_reason"]]
    assert sorted(f["index"] for f in finishes) == [0, 1]


async def test_tool_call_deltas_by_index(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    body = user("lookup this", tools=[TOOL], tool_choice="required")
    plain = await chat(http, simulator, body)
    reply = await chat(http, simulator, {**body, "stream": True})
    chunks = events(reply.raw)[0][:-1]
    assert chunks[0]["choices"][0]["delta"] == {
        "role": "assistant",
        "content": None,
        "refusal": None,
    }
    calls = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if "tool_calls" in c["choices"][0]["delta"]
    ]
    expected = plain.json["choices"][0]["message"]["tool_calls"][0]
    assert calls[0] == {
        "index": 0,
        "id": expected["id"],
        "type": "function",
        "function": {"name": "lookup", "arguments": ""},
    }
    assert all(set(fragment) == {"index", "function"} for fragment in calls[1:])
    assert "".join(f["function"]["arguments"] for f in calls) == expected["function"]["arguments"]
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "tool_calls",
    }


async def test_reasoning_and_logprobs_stream_with_the_tokens(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    body = {**user("reason"), "model": "deepseek-reasoner", "logprobs": True, "top_logprobs": 2}
    plain = await chat(http, simulator, body)
    reply = await chat(http, simulator, {**body, "stream": True})
    chunks = events(reply.raw)[0][:-1]
    message = plain.json["choices"][0]["message"]
    assert deltas(chunks, 0, "reasoning_content") == message["reasoning_content"]
    assert deltas(chunks, 0, "content") == message["content"]
    streamed = [
        entry
        for chunk in chunks
        if chunk["choices"][0]["logprobs"]
        for entry in chunk["choices"][0]["logprobs"]["content"]
    ]
    assert streamed == plain.json["choices"][0]["logprobs"]["content"]


async def test_slow_streams_send_keep_alive_comments(
    simulator_factory: Any, http: aiohttp.ClientSession
) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:  # time passes only in this list
        slept.append(seconds)

    sim = await simulator_factory(
        tokens_per_s=0.5, keep_alive_s=1.5, latency=LatencySpec(mean_ms=4000), sleep=sleep
    )
    plain = await chat(http, sim, user("slowly"))
    reply = await chat(http, sim, user("slowly", stream=True))
    data, comments = events(reply.raw)
    tokens = plain.json["usage"]["completion_tokens"]
    # 4 s before the first token, then 2 s per token; a keep-alive every full 1.5 s of silence
    assert comments == 2 + tokens * 1
    assert sum(slept) == 4.0 + 4.0 + tokens * 2.0  # (the plain request waited its 4 s too)
    assert data[-1] == "[DONE]"
    assert deltas(data[:-1], 0, "content") == plain.json["choices"][0]["message"]["content"]
    # the headers go out at once; the wait for the first token is filled with keep-alives
    assert reply.raw.startswith(b": keep-alive\n\n: keep-alive\n\ndata: ")
