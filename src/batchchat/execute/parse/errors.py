"""Error statuses → the typed :class:`APIStatusError` they stand for. Pure.

Decided by the ``code``/``type`` fields of the body (OpenAI style, or whatever a
gateway sends: integer codes, missing fields, HTML pages); free text is matched only
where a provider signals a case in nothing else, in one small table below.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from batchchat.errors import (
    APIStatusError,
    AuthenticationError,
    ClientError,
    ConflictError,
    ContextLengthError,
    QuotaExceededError,
    RateLimitError,
    RequestTooLargeError,
    ResponseFormatError,
    ServerError,
)
from batchchat.execute.headers import retry_after_s
from batchchat.execute.parse._text import clip

#: error ``code`` / ``type`` values that decide the error class whatever the status
_CODE_CLASSES: dict[str, type[APIStatusError]] = {
    "insufficient_quota": QuotaExceededError,
    "credit_balance_exhausted": QuotaExceededError,
    "billing_hard_limit_reached": QuotaExceededError,
    "insufficient_user_quota": QuotaExceededError,  # new-api / one-api gateways
    "context_length_exceeded": ContextLengthError,
    "exceed_context_size_error": ContextLengthError,  # llama.cpp's llama-server
}

#: The only free-text matching in batchchat: providers that signal these cases solely in
#: the message. (statuses it applies to, lower-case phrase, error class)
_MESSAGE_SIGNALS: tuple[tuple[frozenset[int], str, type[APIStatusError]], ...] = (
    # OpenAI: a 429 "Request too large for <model> ... on tokens per min" -- waiting cannot help
    (frozenset({429}), "request too large", RequestTooLargeError),
    # vLLM and older OpenAI models send context overflows without a code
    (frozenset({400, 413, 422}), "maximum context length", ContextLengthError),
    # llama.cpp's wording, for builds whose error type says nothing
    (frozenset({400, 413, 422}), "exceeds the available context size", ContextLengthError),
)

_HTML_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def status_error(status: int, headers: Mapping[str, str], body: bytes) -> APIStatusError:
    """The typed error for an error status, its details read from whatever the body holds."""
    message, code, error_type = _error_details(body)
    cls = _error_class(status, code, error_type, message)
    # gateways repeat the status as the code ("code": "400"): the type says more then
    named = code if code is not None and not code.isdigit() else error_type
    text = f"HTTP {status}" + (f" {named}" if named else "") + (f": {message}" if message else "")
    return cls(
        text,
        status=status,
        code=code,
        error_type=error_type,
        body=body,
        headers=headers,
        retry_after=retry_after_s(headers),
    )


def _error_class(
    status: int, code: str | None, error_type: str | None, message: str
) -> type[APIStatusError]:
    for key in (code, error_type):
        if key is not None and key in _CODE_CLASSES:
            return _CODE_CLASSES[key]
    lowered = message.lower()
    for statuses, phrase, cls in _MESSAGE_SIGNALS:
        if status in statuses and phrase in lowered:
            return cls
    if status in (401, 403):
        return AuthenticationError
    if status in (408, 409):
        return ConflictError
    if status == 429:
        return RateLimitError
    if status >= 500:
        return ServerError
    if status >= 400:
        return ClientError
    return APIStatusError


def _error_details(body: bytes) -> tuple[str, str | None, str | None]:
    """(message, code, type) from an OpenAI-style, vLLM-style, plain-text or HTML error body."""
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return _text_of(body), None, None
    if not isinstance(data, dict):
        return (_text_of(body) if data is not None else ""), None, None
    error = data.get("error", data)
    if isinstance(error, str):  # {"error": "message"} (some gateways)
        return clip(error), _str(data.get("code")), _str(data.get("type"))
    if not isinstance(error, dict):
        return clip(str(error)), None, None
    message = error.get("message") or error.get("detail") or data.get("message") or ""
    return clip(str(message)), _str(error.get("code")), _str(error.get("type"))


def error_in_ok_body(
    status: int, headers: Mapping[str, str], body: bytes
) -> APIStatusError | ResponseFormatError:
    """A 2xx whose body is an error object (some gateways do this).

    Typed like the status its integer ``code`` names, or by its code/type; otherwise a
    :class:`ResponseFormatError` (retryable).
    """
    _, code, _ = _error_details(body)
    named = int(code) if code is not None and code.isdigit() else 0
    typed = status_error(named if 400 <= named < 600 else status, headers, body)
    if type(typed) is APIStatusError:
        return ResponseFormatError(f"HTTP {status} with an error body: {typed}")
    return typed


def _text_of(body: bytes) -> str:
    title = _HTML_TITLE.search(body)
    text = title.group(1) if title else body
    return clip(" ".join(text.decode("utf-8", "replace").split()))


def _str(value: Any) -> str | None:
    return None if value is None else str(value)
