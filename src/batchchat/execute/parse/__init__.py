"""HTTP response → :class:`ChatResponse`, or the typed error it stands for. Pure: no I/O.

Error statuses are typed in :mod:`batchchat.execute.parse.errors`; a ``stream: true`` body is
assembled by :mod:`batchchat.execute.parse.sse` into the same shape as a non-streamed
completion, so both go through one builder and compare equal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from batchchat.errors import ResponseFormatError
from batchchat.execute.parse._text import load_object
from batchchat.execute.parse.errors import error_in_ok_body, status_error
from batchchat.execute.parse.sse import assemble_stream
from batchchat.models import ChatResponse, Choice, TokenLogprob, ToolCall, TopLogprob, Usage

if TYPE_CHECKING:  # the transport module imports aiohttp; parsing stays free of it
    from batchchat.execute.transport import HTTPResponse

__all__ = ["assemble_stream", "build_response", "parse_response", "status_error"]


def parse_response(response: HTTPResponse, *, stream: bool, keep_raw: bool) -> ChatResponse:
    """The completion in ``response``.

    Raises the matching :class:`APIStatusError` for error statuses,
    :class:`ResponseFormatError` for unusable bodies and :class:`StreamError` for an
    error event inside a 200 stream.
    """
    status, body = response.status, response.body
    if not 200 <= status < 300:
        raise status_error(status, response.headers, body)
    if stream and not _looks_like_json(body):
        data = assemble_stream(body)
        raw = orjson.dumps(data).decode() if keep_raw else None
    else:
        data = load_object(body, "response body")
        raw = body.decode("utf-8", "replace") if keep_raw else None
        if "choices" not in data and "error" in data:
            raise error_in_ok_body(status, response.headers, body)
    try:
        return build_response(data, raw)
    except (TypeError, AttributeError, ValueError, KeyError) as exc:
        raise ResponseFormatError(f"malformed completion ({type(exc).__name__}: {exc})") from None


def build_response(data: dict[str, Any], raw: str | None = None) -> ChatResponse:
    """A :class:`ChatResponse` from a decoded ``chat.completion`` object."""
    choices = data.get("choices")
    if not isinstance(choices, list):
        raise ResponseFormatError("completion has no choices list")
    return ChatResponse(
        id=data.get("id"),
        model=data.get("model"),
        system_fingerprint=data.get("system_fingerprint"),
        choices=[_choice(choice, position) for position, choice in enumerate(choices)],
        usage=_usage(data.get("usage")),
        raw=raw,
    )


def _choice(data: dict[str, Any], position: int) -> Choice:
    message = data.get("message") or {}
    reasoning = message.get("reasoning_content")
    return Choice(
        index=data.get("index", position),
        content=_content_text(message.get("content")),
        reasoning_content=reasoning if reasoning is not None else message.get("reasoning"),
        refusal=message.get("refusal"),
        finish_reason=data.get("finish_reason"),
        tool_calls=_tool_calls(message),
        logprobs=_logprobs(data.get("logprobs")),
    )


def _content_text(content: Any) -> str | None:
    if content is None or isinstance(content, str):
        return content
    # some providers answer with a list of content parts
    return "".join(part.get("text") or "" for part in content if isinstance(part, dict))


def _tool_calls(message: dict[str, Any]) -> list[ToolCall]:
    calls = message.get("tool_calls")
    if calls:
        return [
            ToolCall(
                id=call.get("id"),
                type=call.get("type") or "function",
                name=(call.get("function") or {}).get("name"),
                arguments=(call.get("function") or {}).get("arguments"),
            )
            for call in calls
        ]
    legacy = message.get("function_call")  # deprecated single function call
    if legacy:
        return [ToolCall(None, "function", legacy.get("name"), legacy.get("arguments"))]
    return []


def _logprobs(data: Any) -> list[TokenLogprob] | None:
    if not isinstance(data, dict) or data.get("content") is None:
        return None
    return [
        TokenLogprob(
            token=item["token"],
            logprob=float(item["logprob"]),
            bytes=item.get("bytes"),
            top_logprobs=[
                TopLogprob(
                    token=top["token"], logprob=float(top["logprob"]), bytes=top.get("bytes")
                )
                for top in item.get("top_logprobs") or ()
            ],
        )
        for item in data["content"]
    ]


def _usage(data: Any) -> Usage:
    if not isinstance(data, dict):
        return _NO_USAGE
    prompt_details = data.get("prompt_tokens_details") or {}
    completion_details = data.get("completion_tokens_details") or {}
    return Usage(
        prompt_tokens=data.get("prompt_tokens"),
        completion_tokens=data.get("completion_tokens"),
        total_tokens=data.get("total_tokens"),
        cached_tokens=prompt_details.get("cached_tokens"),
        reasoning_tokens=completion_details.get("reasoning_tokens"),
    )


_NO_USAGE = Usage()


def _looks_like_json(body: bytes) -> bool:
    return body.lstrip()[:1] == b"{"
