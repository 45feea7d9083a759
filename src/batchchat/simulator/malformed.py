"""Bodies that are valid JSON, sent with status 200, yet not what the API promises. Pure.

Seen from OpenAI-compatible servers and gateways in the wild:

* ``usage_as_strings``: every number in ``usage`` (details included) is a numeric
  string, ``"prompt_tokens": "12"``;
* ``usage_as_floats``: every number in ``usage`` is a float with the same integral
  value, ``"prompt_tokens": 12.0`` (never a fraction: the counts stay exact);
* ``empty_choices``: ``"choices": []``;
* ``no_message``: each choice lacks its ``message`` (in a stream: its ``delta``).

A stream gets the same change in every chunk it applies to (``usage`` only appears in
the last chunk, with ``include_usage``).
"""

from __future__ import annotations

from typing import Any

import orjson

from batchchat.simulator.stream import Frame, event

BODY_FAULTS = frozenset({"usage_as_strings", "usage_as_floats", "empty_choices", "no_message"})
_DATA = b"data: "


def malform(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``payload`` (a completion or a stream chunk) changed as ``kind`` says."""
    payload = dict(payload)
    if kind in {"usage_as_strings", "usage_as_floats"}:
        if payload.get("usage") is not None:
            payload["usage"] = _numbers_as(payload["usage"], kind == "usage_as_strings")
    elif kind == "empty_choices":
        payload["choices"] = []
    elif kind == "no_message":
        payload["choices"] = [
            {key: value for key, value in choice.items() if key not in {"message", "delta"}}
            for choice in payload["choices"]
        ]
    return payload


def malform_frames(kind: str, frames: list[Frame]) -> list[Frame]:
    """The stream ``frames`` with every data event changed as ``kind`` says."""
    changed = []
    for frame, tokens in frames:
        if frame.startswith(_DATA + b"{"):
            frame = event(malform(kind, orjson.loads(frame[len(_DATA) :])))
        changed.append((frame, tokens))
    return changed


def _numbers_as(usage: dict[str, Any], strings: bool) -> dict[str, Any]:
    converted: dict[str, Any] = {}
    for key, value in usage.items():
        if isinstance(value, dict):
            converted[key] = _numbers_as(value, strings)
        elif isinstance(value, int) and not isinstance(value, bool):
            converted[key] = str(value) if strings else float(value)
        else:
            converted[key] = value
    return converted
