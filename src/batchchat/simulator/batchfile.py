"""A Batch API input file, checked as OpenAI's validation checks it; its output lines. Pure.

:func:`check_input` finds what makes the Batch API fail a batch while validating it: lines
that are not JSON objects, a missing or repeated ``custom_id``, another method or URL, a
second model, ``stream: true``, too many lines or bytes. Bodies themselves are checked only
when a line runs: a bad body is a 400 in the error file, as with the real API.
:func:`output_line` and :func:`expired_line` write the lines of the output and error files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import orjson

#: the most validation errors a failed batch lists
MAX_ERRORS = 10
EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."


@dataclass
class InputLine:
    """One valid line of an input file."""

    #: 1-based line number in the file
    number: int
    custom_id: str
    body: dict[str, Any]


@dataclass
class CheckedInput:
    """What validating an input file found: its lines, or the errors that fail the batch."""

    lines: list[InputLine] = field(default_factory=list)
    model: str | None = None
    #: ``{"code", "message", "param", "line"}`` entries (empty: the file is valid)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def fail(self, code: str, message: str, line: int | None = None) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append({"code": code, "message": message, "param": None, "line": line})


def check_input(content: bytes, url: str, *, max_lines: int, max_bytes: int) -> CheckedInput:
    """Validate a Batch API input file for a batch of ``url`` (e.g. /v1/chat/completions)."""
    checked = CheckedInput()
    if len(content) > max_bytes:
        checked.fail("file_too_large", f"The input file is larger than {max_bytes} bytes.")
        return checked
    rows = [line for line in content.split(b"\n") if line.strip()]
    if not rows:
        checked.fail("empty_file", "The input file is empty.")
    if len(rows) > max_lines:
        checked.fail("too_many_requests", f"The input file has more than {max_lines} requests.")
        return checked
    seen: set[str] = set()
    for number, raw in enumerate(rows, start=1):
        line = _check_line(checked, number, raw, url)
        if line is None:
            continue
        if line.custom_id in seen:
            checked.fail("duplicate_custom_id", f"Duplicate custom_id {line.custom_id!r}.", number)
            continue
        seen.add(line.custom_id)
        checked.lines.append(line)
    return checked


def _check_line(checked: CheckedInput, number: int, raw: bytes, url: str) -> InputLine | None:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        checked.fail("invalid_json_line", "This line is not parseable as valid JSON.", number)
        return None
    if not isinstance(data, dict) or not isinstance(data.get("custom_id"), str):
        checked.fail("missing_required_parameter", "Missing custom_id.", number)
        return None
    if data.get("method") != "POST" or data.get("url") != url:
        checked.fail(
            "invalid_url", f"The URL provided for this request does not match {url}.", number
        )
        return None
    body = data.get("body")
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        checked.fail("missing_required_parameter", "Missing body.model.", number)
        return None
    if body.get("stream") is True:
        checked.fail("invalid_request", "Streaming is not supported in batches.", number)
        return None
    if checked.model is None:
        checked.model = body["model"]
    elif body["model"] != checked.model:
        checked.fail(
            "mismatched_model",
            "All requests in a batch must use the same model; this line uses "
            f"{body['model']!r}, the first one {checked.model!r}.",
            number,
        )
        return None
    return InputLine(number, data["custom_id"], body)


def output_line(custom_id: str, status: int, body: dict[str, Any]) -> bytes:
    """A line of the output file (status 200) or of the error file (an HTTP error)."""
    line = {
        "id": _id("batch_req_"),
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": _id("req_"), "body": body},
        "error": None,
    }
    return orjson.dumps(line) + b"\n"


def expired_line(custom_id: str) -> bytes:
    """A line of the error file for a request not run before the window closed."""
    line = {
        "id": _id("batch_req_"),
        "custom_id": custom_id,
        "response": None,
        "error": {"code": "batch_expired", "message": EXPIRED_MESSAGE},
    }
    return orjson.dumps(line) + b"\n"


def _id(prefix: str) -> str:
    return prefix + os.urandom(12).hex()
