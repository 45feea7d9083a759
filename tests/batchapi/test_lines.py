"""Result-file lines → answers or typed errors, as a table of the shapes providers write."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from batchchat.batchapi.lines import not_run, outcome_of, parse_file, parse_line
from batchchat.errors import (
    AuthenticationError,
    BatchLineError,
    ClientError,
    ContextLengthError,
    RateLimitError,
    ResponseFormatError,
    ServerError,
    is_retryable,
)
from batchchat.models import ChatResponse

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
}


def raw(response: Any = None, error: Any = None, custom_id: Any = "r1#0") -> bytes:
    return orjson.dumps(
        {"id": "batch_req_1", "custom_id": custom_id, "response": response, "error": error}
    )


def error_body(
    code: str | None, message: str, kind: str = "invalid_request_error"
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


@pytest.mark.parametrize(
    ("line", "expected", "retryable"),
    [
        # OpenAI's output file
        (raw({"status_code": 200, "request_id": "r", "body": COMPLETION}), ChatResponse, None),
        # OpenAI's error file: an HTTP error, typed as online
        (
            raw({"status_code": 429, "body": error_body("rate_limit_exceeded", "slow")}),
            RateLimitError,
            True,
        ),
        (
            raw({"status_code": 500, "body": error_body(None, "oops", "server_error")}),
            ServerError,
            True,
        ),
        (
            raw({"status_code": 401, "body": error_body("invalid_api_key", "no")}),
            AuthenticationError,
            False,
        ),
        (
            raw({"status_code": 400, "body": error_body("context_length_exceeded", "too long")}),
            ContextLengthError,
            False,
        ),
        # a line not run before the window closed
        (
            raw(None, {"code": "batch_expired", "message": "This request could not be executed"}),
            BatchLineError,
            True,
        ),
        # vllm run-batch: the status and the message in "error", no body
        (
            raw({"status_code": 400, "request_id": "v", "body": None}, "bad request: model"),
            ClientError,
            False,
        ),
        # a 200 whose body is no completion
        (raw({"status_code": 200, "body": {"choices": "none"}}), ResponseFormatError, True),
        (raw({"status_code": 200, "body": None}), ResponseFormatError, True),
        # neither a response nor an error object
        (raw(None, None), BatchLineError, True),
        (raw(None, "a plain message"), BatchLineError, True),
        # an error status whose error is in the line's "error", as an object or nothing at all
        (raw({"status_code": 503, "body": None}, {"message": "busy"}), ServerError, True),
        (raw({"status_code": 404, "body": None}), ClientError, False),
        # a completion whose shape no check foresaw
        (
            raw(
                {
                    "status_code": 200,
                    "body": {**COMPLETION, "choices": [{"message": {"content": 7}}]},
                }
            ),
            ResponseFormatError,
            True,
        ),
    ],
)
def test_each_line_becomes_the_answer_or_the_error_it_stands_for(
    line: bytes, expected: type, retryable: bool | None
) -> None:
    parsed = parse_line(line)
    assert parsed is not None and parsed.custom_id == "r1#0"
    outcome = outcome_of(parsed, keep_raw=False)
    assert isinstance(outcome, expected)
    if retryable is not None:
        assert is_retryable(outcome) is retryable


def test_an_answer_keeps_its_usage_model_and_raw_json_when_asked() -> None:
    parsed = parse_line(raw({"status_code": 200, "body": COMPLETION}))
    assert parsed is not None
    answer = outcome_of(parsed, keep_raw=True)
    assert isinstance(answer, ChatResponse)
    assert (answer.model, answer.usage.prompt_tokens, answer.choices[0].content) == (
        "gpt-4o-mini-2024-07-18",
        9,
        "hi",
    )
    assert answer.raw is not None and orjson.loads(answer.raw) == COMPLETION


def test_the_error_message_and_code_are_kept() -> None:
    parsed = parse_line(raw(None, {"code": "batch_expired", "message": "window closed"}))
    assert parsed is not None
    error = outcome_of(parsed, keep_raw=False)
    assert isinstance(error, BatchLineError)
    assert error.code == "batch_expired" and "window closed" in str(error)
    vllm = parse_line(raw({"status_code": 400, "body": None}, "model 'x' not found"))
    assert vllm is not None and "model 'x' not found" in str(outcome_of(vllm, keep_raw=False))


@pytest.mark.parametrize("line", [b"not json", b"[1, 2]", raw(custom_id=None), raw(custom_id=7)])
def test_lines_that_name_no_custom_id_are_unreadable(line: bytes) -> None:
    assert parse_line(line) is None


def test_a_file_counts_its_unreadable_lines() -> None:
    content = b"\n".join([raw({"status_code": 200, "body": COMPLETION}), b"{garbage", b"", raw()])
    parsed = parse_file(content)
    assert len(parsed.lines) == 2 and parsed.unreadable == 1


def test_a_line_in_neither_file_says_why() -> None:
    error = not_run("batch_cancelled", "its batch was cancelled")
    assert error.code == "batch_cancelled" and is_retryable(error)
    assert "its batch was cancelled" in str(error)
