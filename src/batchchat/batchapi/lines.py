"""Lines of Batch API output and error files → the answer or the typed error each stands for.

A line is ``{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}``
(OpenAI, Azure, DashScope, and ``vllm run-batch -o``). A 2xx ``body`` is a
``chat.completion`` read by the same builder as an online answer; an error status is typed
by the same table as an online error (:func:`batchchat.execute.parse.status_error`); a
line that was not run (``"response": null``) is a :class:`BatchLineError` with the
provider's code (``batch_expired``...). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from batchchat.errors import BatchLineError, RequestError, ResponseFormatError
from batchchat.execute.parse import build_response, status_error
from batchchat.models import ChatResponse

#: a line that was not run: why, for people
NOT_RUN = "the Batch API did not run this line"


@dataclass(frozen=True, slots=True)
class ResultLine:
    """One line of an output or error file."""

    custom_id: str
    #: the HTTP status of the line's answer; None when it was not run
    status: int | None
    #: the answer's body (a chat.completion, or an error object)
    body: Any
    #: the line's ``error`` (an object with code and message, or vLLM's text)
    error: Any


@dataclass
class ParsedFile:
    """The lines of a result file that name a custom id, and how many did not."""

    lines: list[ResultLine]
    unreadable: int = 0


def parse_result_lines(raw_lines: Iterable[bytes]) -> Iterator[ResultLine | None]:
    """Each non-empty line as a :class:`ResultLine`, or None when it names no custom id."""
    for raw in raw_lines:
        if raw.strip():
            yield parse_line(raw)


def parse_line(raw: bytes) -> ResultLine | None:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("custom_id"), str):
        return None
    response = data.get("response")
    status = response.get("status_code") if isinstance(response, dict) else None
    body = response.get("body") if isinstance(response, dict) else None
    if not isinstance(status, int) or isinstance(status, bool):
        status = None
    return ResultLine(data["custom_id"], status, body, data.get("error"))


def parse_file(content: bytes) -> ParsedFile:
    """Every line of a result file held in memory."""
    parsed = ParsedFile([])
    for line in parse_result_lines(content.split(b"\n")):
        if line is None:
            parsed.unreadable += 1
        else:
            parsed.lines.append(line)
    return parsed


def outcome_of(line: ResultLine, *, keep_raw: bool) -> ChatResponse | RequestError:
    """The answer a line holds, or the error it stands for."""
    if line.status is not None and 200 <= line.status < 300:
        return _answer(line.body, keep_raw)
    if line.status is not None:
        return status_error(line.status, {}, _error_body(line))
    code, message = _code_and_message(line.error)
    return BatchLineError(f"{message} ({code})", code=code)


def not_run(code: str, why: str) -> BatchLineError:
    """The error of a line missing from both files: ``why`` says what ended its batch."""
    return BatchLineError(f"{NOT_RUN}: {why} ({code})", code=code)


def _answer(body: Any, keep_raw: bool) -> ChatResponse | RequestError:
    if not isinstance(body, dict):
        return ResponseFormatError("the line's answer has no chat.completion body")
    raw = orjson.dumps(body).decode() if keep_raw else None
    try:
        return build_response(body, raw)
    except RequestError as exc:
        return exc
    except (TypeError, AttributeError, ValueError, KeyError, IndexError) as exc:
        return ResponseFormatError(f"malformed completion ({type(exc).__name__}: {exc})")


def _error_body(line: ResultLine) -> bytes:
    """The error body of a failed line; vLLM's run-batch puts its message in ``error``."""
    if line.body is not None:
        return orjson.dumps(line.body)
    if isinstance(line.error, str):
        return orjson.dumps({"error": {"message": line.error}})
    if isinstance(line.error, dict):
        return orjson.dumps({"error": line.error})
    return b""


def _code_and_message(error: Any) -> tuple[str, str]:
    if isinstance(error, dict):
        code = str(error.get("code") or "batch_error")
        return code, str(error.get("message") or NOT_RUN)
    if isinstance(error, str) and error:
        return "batch_error", error
    return "batch_error", NOT_RUN
