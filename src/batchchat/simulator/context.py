"""The context window: which requests overflow it, and the 400 each server style answers. Pure.

OpenAI refuses a request whose prompt plus ``max_tokens`` exceeds the context, with
``code: "context_length_exceeded"``. llama.cpp's server (checked against a real
``llama-server``) refuses only a prompt that fills the context (``n_prompt >= n_ctx``),
with its own body shape (sent as ``application/json; charset=utf-8``, closing the
connection), and otherwise generates until the context is full, ending with
``finish_reason: "length"``.
"""

from __future__ import annotations

from typing import Any


def fit(
    style: str, context: int, prompt_tokens: int, max_tokens: int | None
) -> tuple[int | None, dict[str, Any] | None]:
    """The completion budget of a request that fits, or the 400 body of one that does not."""
    body = overflow_body(style, context, prompt_tokens, max_tokens)
    if body is not None:
        return max_tokens, body
    return completion_budget(style, context, prompt_tokens, max_tokens), None


def overflow_body(
    style: str, context: int, prompt_tokens: int, max_tokens: int | None
) -> dict[str, Any] | None:
    """The 400 body of a request too large for ``context`` tokens; None when it fits."""
    if style == "llamacpp":
        if prompt_tokens < context:
            return None
        return {"error": _llamacpp_error(context, prompt_tokens)}
    if prompt_tokens + (max_tokens or 0) <= context:
        return None
    return {"error": _openai_error(context, prompt_tokens, max_tokens)}


def completion_budget(
    style: str, context: int, prompt_tokens: int, max_tokens: int | None
) -> int | None:
    """The completion tokens a request that fits may use: llama.cpp stops at a full context."""
    if style != "llamacpp":
        return max_tokens
    room = context - prompt_tokens
    return room if max_tokens is None else min(max_tokens, room)


def _openai_error(context: int, prompt_tokens: int, max_tokens: int | None) -> dict[str, Any]:
    if max_tokens:
        asked = (
            f"you requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the "
            f"messages, {max_tokens} in the completion). Please reduce the length of the "
            "messages or completion."
        )
    else:
        asked = (
            f"your messages resulted in {prompt_tokens} tokens. "
            "Please reduce the length of the messages."
        )
    return {
        "message": f"This model's maximum context length is {context} tokens. However, {asked}",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }


def _llamacpp_error(context: int, prompt_tokens: int) -> dict[str, Any]:
    # key order as llama-server writes it: code, message, type, then the two counts
    return {
        "code": 400,
        "message": (
            f"request ({prompt_tokens} tokens) exceeds the available context size "
            f"({context} tokens), try increasing it"
        ),
        "type": "exceed_context_size_error",
        "n_prompt_tokens": prompt_tokens,
        "n_ctx": context,
    }
