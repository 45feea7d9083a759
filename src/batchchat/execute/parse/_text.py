"""Decoding helpers the parsers share: a JSON object or a typed error, clipped messages."""

from __future__ import annotations

from typing import Any

import orjson

from batchchat.errors import ResponseFormatError

_MAX_MESSAGE = 300


def load_object(data: bytes, what: str) -> dict[str, Any]:
    """``data`` decoded as a JSON object; :class:`ResponseFormatError` saying why not."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        kind = "empty" if not data.strip() else "truncated or not JSON"
        raise ResponseFormatError(f"{what} is {kind} ({exc})") from None
    if not isinstance(value, dict):
        raise ResponseFormatError(f"{what} is not a JSON object")
    return value


def clip(text: str) -> str:
    """A message short enough for an error column."""
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"
