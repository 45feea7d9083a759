"""The context window: OpenAI's and llama.cpp's 400s for requests that do not fit."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from batchchat.planning.tokens import estimate_prompt_tokens
from tests.simulator._client import chat, user

PROMPT = user("hello " * 40)
PROMPT_TOKENS = estimate_prompt_tokens(PROMPT["messages"])


async def test_openai_counts_prompt_plus_max_tokens(
    simulator_factory: Any, http: aiohttp.ClientSession
) -> None:
    sim = await simulator_factory(context_tokens=PROMPT_TOKENS + 100, rpm=10)
    assert (await chat(http, sim, {**PROMPT, "max_tokens": 100})).status == 200
    refused = await chat(http, sim, {**PROMPT, "max_tokens": 101})
    assert refused.status == 400
    assert refused.json == {
        "error": {
            "message": (
                f"This model's maximum context length is {PROMPT_TOKENS + 100} tokens. "
                f"However, you requested {PROMPT_TOKENS + 101} tokens ({PROMPT_TOKENS} in the "
                "messages, 101 in the completion). Please reduce the length of the messages "
                "or completion."
            ),
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }
    assert refused.headers["x-ratelimit-remaining-requests"] == "9"  # not charged


async def test_openai_without_max_tokens_checks_the_messages(
    simulator_factory: Any, http: aiohttp.ClientSession
) -> None:
    sim = await simulator_factory(context_tokens=PROMPT_TOKENS - 1)
    refused = await chat(http, sim, PROMPT)
    assert refused.json["error"]["message"] == (
        f"This model's maximum context length is {PROMPT_TOKENS - 1} tokens. However, your "
        f"messages resulted in {PROMPT_TOKENS} tokens. Please reduce the length of the messages."
    )


async def test_llamacpp_refuses_a_prompt_that_fills_the_context(
    simulator_factory: Any, http: aiohttp.ClientSession
) -> None:
    sim = await simulator_factory(context_tokens=PROMPT_TOKENS, error_style="llamacpp")
    refused = await chat(http, sim, {**PROMPT, "stream": True})
    assert refused.status == 400
    assert refused.headers["content-type"] == "application/json; charset=utf-8"
    assert refused.headers["connection"] == "close"
    # byte for byte what llama-server sends (only the numbers differ)
    assert refused.raw == orjson.dumps(
        {
            "error": {
                "code": 400,
                "message": (
                    f"request ({PROMPT_TOKENS} tokens) exceeds the available context size "
                    f"({PROMPT_TOKENS} tokens), try increasing it"
                ),
                "type": "exceed_context_size_error",
                "n_prompt_tokens": PROMPT_TOKENS,
                "n_ctx": PROMPT_TOKENS,
            }
        }
    )
    assert sim.stats()["by_status"] == {"400": 1}


async def test_llamacpp_cuts_the_answer_at_a_full_context(
    simulator_factory: Any, http: aiohttp.ClientSession
) -> None:
    sim = await simulator_factory(context_tokens=PROMPT_TOKENS + 3, error_style="llamacpp")
    reply = await chat(http, sim, {**PROMPT, "max_tokens": 500})  # more than fits: no error
    assert reply.status == 200
    choice = reply.json["choices"][0]
    assert (reply.json["usage"]["completion_tokens"], choice["finish_reason"]) == (3, "length")


async def test_no_context_limit_by_default(
    simulator_factory: Any, http: aiohttp.ClientSession
) -> None:
    sim = await simulator_factory()
    assert (await chat(http, sim, user("hello " * 5000, max_tokens=1_000_000))).status == 200
