"""The official ``openai`` package, pointed at the simulator, parses everything it sends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

import openai
import orjson
import pytest
from pydantic import BaseModel

from batchchat.simulator import SimulatorServer
from batchchat.spec import FaultSpec

MESSAGES: Any = [
    {"role": "system", "content": "You are a test."},
    {"role": "user", "content": "Say something, get_time if you like."},
]


class Address(BaseModel):
    city: str
    zip: str


class Person(BaseModel):
    name: str
    age: int
    mood: Literal["happy", "sad"]
    tags: list[str]
    home: Address
    nickname: str | None


@pytest.fixture
async def client(simulator: SimulatorServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=simulator.base_url, api_key="sk-test", max_retries=0
    ) as client:
        yield client


async def test_plain_completion(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, n=2, seed=1
    )
    assert len(completion.choices) == 2
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.system_fingerprint
    assert completion.usage is not None
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 0


async def test_logprobs(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, logprobs=True, top_logprobs=2
    )
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.content
    assert len(logprobs.content[0].top_logprobs) == 2


async def test_tool_calls(client: openai.AsyncOpenAI) -> None:
    tools: Any = [
        {
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
    ]
    completion = await client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, tools=tools
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    call: Any = choice.message.tool_calls[0]
    assert call.function.name == "get_time"
    assert isinstance(orjson.loads(call.function.arguments)["zone"], str)


async def test_structured_output_parses_into_the_model(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.parse(
        model="gpt-4o-mini", messages=MESSAGES, response_format=Person
    )
    person = completion.choices[0].message.parsed
    assert isinstance(person, Person)
    assert isinstance(person.home, Address)


async def test_stream_with_usage(client: openai.AsyncOpenAI) -> None:
    plain = await client.chat.completions.create(model="o3-mini", messages=MESSAGES, seed=4)
    stream = await client.chat.completions.create(
        model="o3-mini",
        messages=MESSAGES,
        seed=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    text = ""
    usage = None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
    assert text == plain.choices[0].message.content
    assert usage == plain.usage


async def test_stream_helper_assembles_tool_calls(client: openai.AsyncOpenAI) -> None:
    tools: Any = [
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
    ]
    async with client.chat.completions.stream(
        model="gpt-4o-mini", messages=MESSAGES, tools=tools
    ) as stream:
        final = await stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "get_time"  # type: ignore[union-attr]


async def test_errors_map_to_openais_exceptions(simulator_factory: Any) -> None:
    sim = await simulator_factory(api_key="sk-right", rpm=1, faults=FaultSpec(stream_error=1.0))
    async with openai.AsyncOpenAI(
        base_url=sim.base_url, api_key="sk-wrong", max_retries=0
    ) as wrong:
        with pytest.raises(openai.AuthenticationError):
            await wrong.chat.completions.create(model="m", messages=MESSAGES)
    async with openai.AsyncOpenAI(
        base_url=sim.base_url, api_key="sk-right", max_retries=0
    ) as right:
        with pytest.raises(openai.BadRequestError) as bad:
            await right.chat.completions.create(model="m", messages=MESSAGES, n=0)
        assert bad.value.param == "n"  # type: ignore[attr-defined]
        stream = await right.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        with pytest.raises(openai.APIError, match="error while processing"):
            async for _ in stream:
                pass
        with pytest.raises(openai.RateLimitError):
            await right.chat.completions.create(model="m", messages=MESSAGES)
