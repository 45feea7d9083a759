"""A completion as server-sent events, framed exactly as OpenAI streams it. Pure.

Per choice: a role chunk (``{"role": "assistant", "content": ""}``; content
``null`` when the choice calls tools), ``reasoning_content`` deltas, content
deltas one token each (with their logprobs when requested), tool-call deltas
by index (the first with id, type, name and empty arguments, then argument
fragments), and a finish chunk with an empty delta. Choices are interleaved
when ``n > 1``. With ``include_usage`` every chunk carries ``"usage": null``
and a last chunk has ``"choices": []`` and the usage. Then ``data: [DONE]``.
"""

from __future__ import annotations

from itertools import chain, zip_longest
from typing import Any

import orjson

from batchchat.simulator.answers import split_tokens
from batchchat.simulator.completion import Completion, SimChoice

CONTENT_TYPE = "text/event-stream"
DONE = b"data: [DONE]\n\n"
KEEP_ALIVE = b": keep-alive\n\n"

#: one event: its bytes, and how many tokens it carries (what streaming speed is paced by)
Frame = tuple[bytes, int]


def event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def error_event(message: str) -> bytes:
    """An error inside a 200 stream, as OpenAI and gateways send it."""
    return event(
        {"error": {"message": message, "type": "server_error", "param": None, "code": None}}
    )


def stream_frames(completion: Completion, *, include_usage: bool) -> list[Frame]:
    """Every event of the stream of ``completion``, ``[DONE]`` included."""
    base: dict[str, Any] = {
        "id": completion.id,
        "object": "chat.completion.chunk",
        "created": completion.created,
        "model": completion.model,
        "system_fingerprint": completion.fingerprint,
        "service_tier": "default",
    }
    if include_usage:
        base["usage"] = None
    per_choice = [_choice_frames(base, choice) for choice in completion.choices]
    frames = [frame for frame in chain.from_iterable(zip_longest(*per_choice)) if frame]
    if include_usage:
        frames.append((event({**base, "choices": [], "usage": completion.usage}), 0))
    frames.append((DONE, 0))
    return frames


def _choice_frames(base: dict[str, Any], choice: SimChoice) -> list[Frame]:
    def chunk(
        delta: dict[str, Any], tokens: int, logprobs: Any = None, finish: Any = None
    ) -> Frame:
        payload = {
            **base,
            "choices": [
                {
                    "index": choice.index,
                    "delta": delta,
                    "logprobs": logprobs,
                    "finish_reason": finish,
                }
            ],
        }
        return event(payload), tokens

    role: dict[str, Any] = {
        "role": "assistant",
        "content": None if choice.tool_calls else "",
        "refusal": None,
    }
    frames = [chunk(role, 0)]
    for piece in split_tokens(choice.reasoning or ""):
        frames.append(chunk({"reasoning_content": piece}, 1))
    for position, token in enumerate(choice.tokens):
        logprobs = None
        if choice.logprobs is not None:
            logprobs = {"content": [choice.logprobs[position]], "refusal": None}
        frames.append(chunk({"content": token}, 1, logprobs))
    for index, call in enumerate(choice.tool_calls):
        function = call["function"]
        opening = {"index": index, "id": call["id"], "type": "function"}
        opening["function"] = {"name": function["name"], "arguments": ""}
        frames.append(chunk({"tool_calls": [opening]}, 1))
        for piece in split_tokens(function["arguments"]):
            fragment = {"index": index, "function": {"arguments": piece}}
            frames.append(chunk({"tool_calls": [fragment]}, 1))
    frames.append(chunk({}, 0, None, choice.finish_reason))
    return frames
