"""HTTP response → :class:`ChatResponse`, or the typed error it stands for. Pure: no I/O.

Error statuses are typed in :mod:`batchchat.execute.parse.errors`; a ``stream: true`` body is
assembled by :mod:`batchchat.execute.parse.sse` into the same shape as a non-streamed
completion, so both go through one builder and compare equal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from batchchat.errors import EmptyResponseError, ResponseFormatError
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
    try:
        return _completion(response, stream=stream, keep_raw=keep_raw)
    except (TypeError, AttributeError, ValueError, KeyError, IndexError) as exc:
        # a shape no check foresaw: still this response's error, never the run's crash
        raise ResponseFormatError(f"malformed completion ({type(exc).__name__}: {exc})") from None


def _completion(response: HTTPResponse, *, stream: bool, keep_raw: bool) -> ChatResponse:
    body = response.body
    if stream and not _looks_like_json(body):
        data = assemble_stream(body)
        raw = orjson.dumps(data).decode() if keep_raw else None
    else:
        data = load_object(body, "response body")
        raw = body.decode("utf-8", "replace") if keep_raw else None
        if "choices" not in data and "error" in data:
            raise error_in_ok_body(response.status, response.headers, body)
    return build_response(data, raw)


def build_response(data: dict[str, Any], raw: str | None = None) -> ChatResponse:
    """A :class:`ChatResponse` from a decoded ``chat.completion`` object.

    Every value is checked as it is read: a field of the wrong type is this response's
    :class:`ResponseFormatError`, never a value passed on (a number where text belongs
    would fail the run's writes later), and never a crash. Counts sent as numeric text
    ("12") or whole floats (12.0) are read as the numbers they are.
    """
    choices = data.get("choices")
    if not isinstance(choices, list):
        raise ResponseFormatError("completion has no choices list")
    if not choices:
        raise EmptyResponseError("the server answered without any choice (choices: [])")
    return ChatResponse(
        id=_text(data, "id"),
        model=_text(data, "model"),
        system_fingerprint=_text(data, "system_fingerprint"),
        choices=[_choice(choice, position) for position, choice in enumerate(choices)],
        usage=_usage(data.get("usage")),
        raw=raw,
    )


def _choice(data: Any, position: int) -> Choice:
    where = f"choices[{position}]"
    if not isinstance(data, dict):
        raise ResponseFormatError(f"{where} is not an object")
    message = data.get("message")
    if not isinstance(message, dict):
        raise EmptyResponseError(f"{where} has no message")
    reasoning = _text(message, "reasoning_content", where)
    if reasoning is None:
        reasoning = _text(message, "reasoning", where)
    index = data.get("index", position)
    if not isinstance(index, int) or isinstance(index, bool):
        raise ResponseFormatError(f"{where}.index is {index!r}, not a number")
    return Choice(
        index=index,
        content=_content_text(message.get("content"), where),
        reasoning_content=reasoning
        if reasoning is not None
        else _text(message, "reasoning", where),
        refusal=_text(message, "refusal", where),
        finish_reason=_text(data, "finish_reason", where),
        tool_calls=_tool_calls(message, where),
        logprobs=_logprobs(data.get("logprobs"), where),
    )


def _text(data: dict[str, Any], key: str, where: str = "") -> str | None:
    value = data.get(key)
    if value is None or isinstance(value, str):
        return value
    named = f"{where}.{key}" if where else key
    raise ResponseFormatError(f"{named} is {_shown(value)}, not text")


def _content_text(content: Any, where: str) -> str | None:
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):  # some providers answer with a list of content parts
        parts = [part for part in content if isinstance(part, dict)]
        return "".join(_text(part, "text", f"{where}.content") or "" for part in parts)
    raise ResponseFormatError(f"{where}.message.content is {_shown(content)}, not text")


def _tool_calls(message: dict[str, Any], where: str) -> list[ToolCall]:
    calls = message.get("tool_calls")
    if calls:
        if not isinstance(calls, list):
            raise ResponseFormatError(f"{where}.message.tool_calls is not a list")
        return [_tool_call(call, f"{where}.tool_calls[{i}]") for i, call in enumerate(calls)]
    legacy = message.get("function_call")  # deprecated single function call
    if isinstance(legacy, dict):
        name, arguments = _text(legacy, "name", where), _text(legacy, "arguments", where)
        return [ToolCall(None, "function", name, arguments)]
    return []


def _tool_call(call: Any, where: str) -> ToolCall:
    if not isinstance(call, dict):
        raise ResponseFormatError(f"{where} is not an object")
    function = call.get("function") or {}
    if not isinstance(function, dict):
        raise ResponseFormatError(f"{where}.function is not an object")
    return ToolCall(
        id=_text(call, "id", where),
        type=_text(call, "type", where) or "function",
        name=_text(function, "name", where),
        arguments=_text(function, "arguments", where),
    )


def _logprobs(data: Any, where: str) -> list[TokenLogprob] | None:
    if not isinstance(data, dict) or data.get("content") is None:
        return None
    items = data["content"]
    if not isinstance(items, list):
        raise ResponseFormatError(f"{where}.logprobs.content is not a list")
    return [_token(item, f"{where}.logprobs.content[{i}]") for i, item in enumerate(items)]


def _token(item: Any, where: str) -> TokenLogprob:
    if not isinstance(item, dict) or not isinstance(item.get("token"), str):
        raise ResponseFormatError(f"{where} has no token")
    tops = item.get("top_logprobs") or []
    if not isinstance(tops, list):
        raise ResponseFormatError(f"{where}.top_logprobs is not a list")
    return TokenLogprob(
        token=item["token"],
        logprob=_logprob(item, where),
        bytes=_byte_list(item.get("bytes")),
        top_logprobs=[
            TopLogprob(
                token=_text(top, "token", where) or "",
                logprob=_logprob(top, where),
                bytes=_byte_list(top.get("bytes")),
            )
            for top in tops
            if isinstance(top, dict)
        ],
    )


def _logprob(item: dict[str, Any], where: str) -> float:
    value = item.get("logprob")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise ResponseFormatError(f"{where}.logprob is {_shown(value)}, not a number")


def _byte_list(value: Any) -> list[int] | None:
    if isinstance(value, list) and all(
        isinstance(b, int) and not isinstance(b, bool) for b in value
    ):
        return value
    return None  # the bytes of a token are a convenience: unusable ones are left out


def _usage(data: Any) -> Usage:
    if not isinstance(data, dict):
        return _NO_USAGE
    prompt_details = data.get("prompt_tokens_details")
    completion_details = data.get("completion_tokens_details")
    return Usage(
        prompt_tokens=_count(data, "prompt_tokens"),
        completion_tokens=_count(data, "completion_tokens"),
        total_tokens=_count(data, "total_tokens"),
        cached_tokens=_count(prompt_details, "cached_tokens", "prompt_tokens_details"),
        reasoning_tokens=_count(
            completion_details, "reasoning_tokens", "completion_tokens_details"
        ),
    )


def _count(data: Any, key: str, where: str = "") -> int | None:
    """A token count: a whole number, or one sent as text ("12") or as a float (12.0)."""
    if not isinstance(data, dict) or data.get(key) is None:
        return None
    value = data[key]
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    if number is None or number < 0:
        named = f"usage.{where}.{key}" if where else f"usage.{key}"
        raise ResponseFormatError(f"{named} is {_shown(value)}, not a count of tokens")
    return number


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_NO_USAGE = Usage()


def _looks_like_json(body: bytes) -> bool:
    return body.lstrip()[:1] == b"{"
