"""An answer ↔ the bytes the cache keeps: a ``chat.completion`` object, compressed. Pure.

An answer is stored in the API's own shape, so it reads back through the same parser as
a fresh one (:func:`batchchat.execute.parse.build_response`): a stored answer that is
damaged is a miss, never a wrong row.
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson

from batchchat.errors import RequestError
from batchchat.execute.parse import build_response
from batchchat.models import ChatResponse, Choice

#: zlib's fastest level: JSON with logprobs shrinks ~4×, at a few µs per answer
_LEVEL = 1


def encode_response(response: ChatResponse) -> bytes:
    """The answer as a compressed ``chat.completion`` JSON object."""
    return zlib.compress(orjson.dumps(completion_object(response)), _LEVEL)


def decode_response(data: bytes) -> ChatResponse | None:
    """The answer in ``data``; None when it is damaged (a miss, not an error)."""
    try:
        return build_response(orjson.loads(zlib.decompress(data)))
    except (zlib.error, orjson.JSONDecodeError, RequestError, TypeError, ValueError):
        return None


def completion_object(response: ChatResponse) -> dict[str, Any]:
    """``response`` as the ``chat.completion`` object a server would have sent."""
    usage = response.usage
    return {
        "id": response.id,
        "object": "chat.completion",
        "model": response.model,
        "system_fingerprint": response.system_fingerprint,
        "choices": [_choice(choice) for choice in response.choices],
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        },
    }


def _choice(choice: Choice) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": choice.content,
        "refusal": choice.refusal,
        "reasoning_content": choice.reasoning_content,
    }
    if choice.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": call.type,
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in choice.tool_calls
        ]
    logprobs = (
        None if choice.logprobs is None else {"content": [t.as_json() for t in choice.logprobs]}
    )
    return {
        "index": choice.index,
        "message": message,
        "logprobs": logprobs,
        "finish_reason": choice.finish_reason,
    }
