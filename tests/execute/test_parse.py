"""HTTP responses → ChatResponse or the typed error: tables of real-world bodies and streams."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchchat.errors import (
    APIStatusError,
    AuthenticationError,
    ClientError,
    ConflictError,
    ContextLengthError,
    EmptyResponseError,
    QuotaExceededError,
    RateLimitError,
    RequestError,
    RequestTooLargeError,
    ResponseFormatError,
    ServerError,
    StreamError,
    is_retryable,
)
from batchchat.execute.headers import retry_after_s
from batchchat.execute.parse import parse_response, status_error
from batchchat.execute.transport import HTTPResponse
from batchchat.models import ChatResponse, Choice, TokenLogprob, ToolCall, TopLogprob, Usage


def _error_body(message: str, type_: str | None = None, code: Any = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}})


def _parse(status: int, body: bytes, headers: dict[str, str] | None = None) -> ChatResponse:
    return parse_response(HTTPResponse(status, headers or {}, body), stream=False, keep_raw=False)


# -- error statuses -----------------------------------------------------------------------------

ERROR_CASES = [
    # (status, body, expected class, retryable)
    (
        400,
        _error_body("Invalid value for 'temperature'", "invalid_request_error"),
        ClientError,
        False,
    ),
    (
        400,
        _error_body(
            "This model's maximum context length is 8192 tokens",
            "invalid_request_error",
            "context_length_exceeded",
        ),
        ContextLengthError,
        False,
    ),
    # vLLM: no code, the message is the only signal
    (
        400,
        orjson.dumps(
            {
                "object": "error",
                "message": "This model's maximum context length is 4096 tokens. "
                "However, you requested 5000 tokens",
                "type": "BadRequestError",
                "code": 400,
            }
        ),
        ContextLengthError,
        False,
    ),
    (
        401,
        _error_body("Incorrect API key provided", "invalid_request_error", "invalid_api_key"),
        AuthenticationError,
        False,
    ),
    (
        403,
        _error_body("You are not allowed to use this model", "invalid_request_error"),
        AuthenticationError,
        False,
    ),
    (
        404,
        _error_body("The model `gpt-9` does not exist", "invalid_request_error", "model_not_found"),
        ClientError,
        False,
    ),
    (413, b"Request Entity Too Large", ClientError, False),
    (
        422,
        orjson.dumps({"detail": [{"loc": ["body", "messages"], "msg": "field required"}]}),
        ClientError,
        False,
    ),
    (408, _error_body("Request timed out"), ConflictError, True),
    (409, _error_body("Conflict"), ConflictError, True),
    (
        429,
        _error_body("Rate limit reached for requests", "requests", "rate_limit_exceeded"),
        RateLimitError,
        True,
    ),
    (429, _error_body("Please slow down", "slow_down", "slow_down"), RateLimitError, True),
    (
        429,
        _error_body("You exceeded your current quota", "insufficient_quota", "insufficient_quota"),
        QuotaExceededError,
        False,
    ),
    (
        429,
        _error_body("Your credit balance is too low", "credit_balance_exhausted"),
        QuotaExceededError,
        False,
    ),
    (
        429,
        _error_body(
            "Request too large for gpt-4o in organization org-x on tokens per min (TPM): "
            "Limit 30000, Requested 50000.",
            "tokens",
            "rate_limit_exceeded",
        ),
        RequestTooLargeError,
        False,
    ),
    # new-api / one-api gateways: quota as a 403 with their own code
    (
        403,
        _error_body("用户额度不足", "new_api_error", "insufficient_user_quota"),
        QuotaExceededError,
        False,
    ),
    (500, _error_body("The server had an error", "server_error"), ServerError, True),
    (502, _error_body("Bad gateway.", "cf_bad_gateway", 502), ServerError, True),
    (
        502,
        b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
        ServerError,
        True,
    ),
    (503, _error_body("The server is overloaded", "server_error"), ServerError, True),
    (504, b"", ServerError, True),
    (529, _error_body("Overloaded", "overloaded_error"), ServerError, True),
    (400, orjson.dumps({"error": "bad request: messages is empty"}), ClientError, False),
    (400, orjson.dumps(["not", "an", "object"]), ClientError, False),
]


@pytest.mark.parametrize(("status", "body", "expected", "retryable"), ERROR_CASES)
def test_error_statuses_become_typed_errors(
    status: int, body: bytes, expected: type[APIStatusError], retryable: bool
) -> None:
    with pytest.raises(APIStatusError) as caught:
        _parse(status, body)
    assert type(caught.value) is expected
    assert caught.value.http_status == status
    assert caught.value.body == body
    assert is_retryable(caught.value) is retryable


def test_error_fields_are_read_from_the_body() -> None:
    error = status_error(
        404, {}, _error_body("no such model", "invalid_request_error", "model_not_found")
    )
    assert error.code == "model_not_found"
    assert error.error_type == "invalid_request_error"
    assert str(error) == "HTTP 404 model_not_found: no such model"


def test_integer_codes_become_strings() -> None:
    error = status_error(502, {}, _error_body("Bad gateway.", "cf_bad_gateway", 502))
    assert error.code == "502"


def test_html_error_pages_give_their_title() -> None:
    error = status_error(502, {}, b"<html><title>502 Bad Gateway</title><body>" + b"x" * 5000)
    assert str(error) == "HTTP 502: 502 Bad Gateway"


def test_long_messages_are_clipped() -> None:
    error = status_error(500, {}, b"y" * 10_000)
    assert len(str(error)) < 400


def test_rate_limit_errors_carry_the_servers_retry_after() -> None:
    headers = {"retry-after": "2", "retry-after-ms": "1250"}
    with pytest.raises(RateLimitError) as caught:
        _parse(429, _error_body("slow down", "requests", "rate_limit_exceeded"), headers)
    assert caught.value.retry_after == 1.25
    assert caught.value.headers == headers


RETRY_AFTER_CASES = [
    ({}, None),
    ({"retry-after": "3"}, 3.0),
    ({"retry-after": "0.5"}, 0.5),
    ({"retry-after-ms": "20"}, 0.02),
    ({"retry-after": "7", "retry-after-ms": "6500"}, 6.5),  # the precise one wins
    ({"retry-after-ms": "soon", "retry-after": "4"}, 4.0),
    ({"retry-after": "-3"}, 0.0),
    ({"retry-after": "Wed, 21 Oct 2015 07:28:30 GMT"}, 30.0),  # now = 07:28:00
    ({"retry-after": "whenever"}, None),
]


@pytest.mark.parametrize(("headers", "expected"), RETRY_AFTER_CASES)
def test_retry_after_header_table(headers: dict[str, str], expected: float | None) -> None:
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert retry_after_s(headers, now=now) == expected


# -- unusable 200s ------------------------------------------------------------------------------

BAD_OK_BODIES = [
    b"",
    b'{"id": "chatcmpl-1", "choices": [{"index": 0, "message": {"role": "assis',  # truncated
    b"<html>not json</html>",
    b'"just a string"',
    b'{"id": "x", "object": "chat.completion"}',  # no choices
    b'{"choices": [{"index": 0, "message": "not a dict"}]}',
    b'{"choices": [{"message": {"content": "x"}, "logprobs": {"content": [{"token": "a"}]}}]}',
]


@pytest.mark.parametrize("body", BAD_OK_BODIES)
def test_unusable_ok_bodies_are_response_format_errors(body: bytes) -> None:
    with pytest.raises(ResponseFormatError) as caught:
        _parse(200, body)
    assert is_retryable(caught.value)


def test_an_error_object_in_a_200_is_typed_by_its_code() -> None:
    with pytest.raises(ServerError):
        _parse(200, _error_body("upstream failed", "upstream_error", 500))
    with pytest.raises(QuotaExceededError):
        _parse(200, _error_body("no quota", "insufficient_quota", "insufficient_quota"))
    with pytest.raises(ResponseFormatError):
        _parse(200, _error_body("something odd", "weird"))


# -- complete responses -------------------------------------------------------------------------

FULL_RESPONSE: dict[str, Any] = {
    "id": "chatcmpl-123",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-4o-mini",
    "system_fingerprint": "fp_abc",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "reasoning_content": "thinking...",
                "refusal": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": '{"q": "x"}'},
                    }
                ],
            },
            "logprobs": {
                "content": [
                    {
                        "token": "Hi",
                        "logprob": -0.1,
                        "bytes": [72, 105],
                        "top_logprobs": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105]}],
                    }
                ]
            },
            "finish_reason": "tool_calls",
        },
        {
            "index": 1,
            "message": {"role": "assistant", "content": "Hello"},
            "logprobs": None,
            "finish_reason": "length",
        },
    ],
    "usage": {
        "prompt_tokens": 20,
        "completion_tokens": 10,
        "total_tokens": 30,
        "prompt_tokens_details": {"cached_tokens": 8, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 4},
    },
}


def test_a_full_response_is_built_into_typed_values() -> None:
    response = _parse(200, orjson.dumps(FULL_RESPONSE))
    assert response == ChatResponse(
        id="chatcmpl-123",
        model="gpt-4o-mini",
        system_fingerprint="fp_abc",
        choices=[
            Choice(
                index=0,
                content=None,
                reasoning_content="thinking...",
                refusal=None,
                finish_reason="tool_calls",
                tool_calls=[ToolCall("call_1", "function", "lookup", '{"q": "x"}')],
                logprobs=[TokenLogprob("Hi", -0.1, [72, 105], [TopLogprob("Hi", -0.1, [72, 105])])],
            ),
            Choice(1, "Hello", None, None, "length", [], None),
        ],
        usage=Usage(20, 10, 30, cached_tokens=8, reasoning_tokens=4),
    )


def test_keep_raw_keeps_the_body_text() -> None:
    body = orjson.dumps(FULL_RESPONSE)
    response = parse_response(HTTPResponse(200, {}, body), stream=False, keep_raw=True)
    assert response.raw == body.decode()
    assert _parse(200, body).raw is None


def test_missing_usage_and_optional_fields_are_none() -> None:
    body = orjson.dumps({"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]})
    response = _parse(200, body)
    assert response.usage == Usage()
    assert response.id is None and response.system_fingerprint is None
    assert response.choices[0].index == 0 and response.choices[0].content == "ok"


def test_content_parts_and_legacy_function_calls_are_flattened() -> None:
    body = orjson.dumps(
        {
            "choices": [
                {
                    "message": {
                        "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                        "function_call": {"name": "f", "arguments": "{}"},
                        "reasoning": "deepseek-style under another name",
                    },
                    "finish_reason": "function_call",
                }
            ]
        }
    )
    choice = _parse(200, body).choices[0]
    assert choice.content == "ab"
    assert choice.tool_calls == [ToolCall(None, "function", "f", "{}")]
    assert choice.reasoning_content == "deepseek-style under another name"


# -- streams ------------------------------------------------------------------------------------


def _sse(*events: Any, done: bool = True, sep: str = "\n") -> bytes:
    lines = []
    for event in events:
        lines.append(event if isinstance(event, str) else "data: " + orjson.dumps(event).decode())
        lines.append("")
    if done:
        lines += ["data: [DONE]", ""]
    return (sep.join(lines) + sep).encode()


def _chunk(
    delta: dict[str, Any], finish: str | None = None, index: int = 0, **extra: Any
) -> dict[str, Any]:
    choice = {"index": index, "delta": delta, "finish_reason": finish, **extra}
    return {
        "id": "chatcmpl-s",
        "object": "chat.completion.chunk",
        "model": "m",
        "system_fingerprint": "fp_1",
        "choices": [choice],
    }


def _parse_stream(body: bytes, keep_raw: bool = False) -> ChatResponse:
    return parse_response(HTTPResponse(200, {}, body), stream=True, keep_raw=keep_raw)


USAGE = {
    "prompt_tokens": 5,
    "completion_tokens": 3,
    "total_tokens": 8,
    "prompt_tokens_details": {"cached_tokens": 0},
}


def test_stream_content_is_the_concatenation_of_deltas() -> None:
    body = _sse(
        _chunk({"role": "assistant", "content": ""}),
        ": keep-alive",
        _chunk({"content": "Hel"}),
        ": keep-alive",
        _chunk({"content": "lo"}),
        _chunk({}, finish="stop"),
        {"id": "chatcmpl-s", "choices": [], "usage": USAGE},
    )
    response = _parse_stream(body)
    assert response.choices == [Choice(0, "Hello", None, None, "stop", [], None)]
    assert response.usage == Usage(5, 3, 8, cached_tokens=0)
    assert (response.id, response.model, response.system_fingerprint) == ("chatcmpl-s", "m", "fp_1")


def test_an_empty_streamed_answer_is_empty_text_as_when_not_streamed() -> None:
    # llama-server streams no content delta for an empty answer, only its role
    body = _sse(_chunk({"role": "assistant", "content": None}), _chunk({}, finish="stop"))
    assert _parse_stream(body).choices[0].content == ""


def test_stream_merges_reasoning_refusal_and_tool_call_fragments_by_index() -> None:
    body = _sse(
        _chunk({"role": "assistant", "reasoning_content": "Let me "}),
        _chunk({"reasoning_content": "think."}),
        _chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "f", "arguments": ""},
                    }
                ]
            }
        ),
        _chunk(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "g", "arguments": '{"y"'},
                    }
                ]
            }
        ),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"x": '}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
        _chunk({"tool_calls": [{"index": 1, "function": {"arguments": ": 2}"}}]}),
        _chunk({}, finish="tool_calls"),
    )
    choice = _parse_stream(body).choices[0]
    assert choice.reasoning_content == "Let me think."
    assert choice.content is None
    assert choice.tool_calls == [
        ToolCall("call_a", "function", "f", '{"x": 1}'),
        ToolCall("call_b", "function", "g", '{"y": 2}'),
    ]
    assert choice.finish_reason == "tool_calls"


def test_stream_merges_several_choices_and_their_logprobs() -> None:
    def lp(token: str) -> dict[str, Any]:
        return {"content": [{"token": token, "logprob": -1.0, "bytes": None, "top_logprobs": []}]}

    body = _sse(
        _chunk({"content": "a"}, index=0, logprobs=lp("a")),
        _chunk({"content": "x"}, index=1, logprobs=lp("x")),
        _chunk({"content": "b"}, index=0, logprobs=lp("b")),
        _chunk({}, finish="stop", index=1),
        _chunk({}, finish="length", index=0),
    )
    first, second = _parse_stream(body).choices
    assert (first.content, first.finish_reason) == ("ab", "length")
    assert [t.token for t in first.logprobs or []] == ["a", "b"]
    assert (second.content, second.finish_reason) == ("x", "stop")


def test_stream_tolerates_crlf_and_missing_space_after_colon() -> None:
    body = _sse(_chunk({"content": "ok"}), _chunk({}, finish="stop"), sep="\r\n").replace(
        b"data: ", b"data:"
    )
    assert _parse_stream(body).choices[0].content == "ok"


def test_stream_without_done_is_truncated() -> None:
    body = _sse(_chunk({"content": "partial"}), _chunk({}, finish="stop"), done=False)
    with pytest.raises(ResponseFormatError, match="without \\[DONE\\]") as caught:
        _parse_stream(body)
    assert is_retryable(caught.value)


def test_stream_without_finish_reason_is_incomplete() -> None:
    body = _sse(_chunk({"content": "a"}, index=0), _chunk({}, finish="stop", index=1))
    with pytest.raises(ResponseFormatError, match="no finish_reason for choice\\(s\\) \\[0\\]"):
        _parse_stream(body)


def test_stream_cut_mid_chunk_is_a_format_error() -> None:
    body = _sse(_chunk({"content": "a"}), done=False)[:-20]
    with pytest.raises(ResponseFormatError):
        _parse_stream(body)


def test_error_event_inside_a_200_stream_is_a_stream_error() -> None:
    body = _sse(
        _chunk({"content": "a"}),
        {"error": {"message": "upstream died", "type": "server_error", "code": "internal"}},
    )
    with pytest.raises(StreamError, match="internal: upstream died") as caught:
        _parse_stream(body)
    assert is_retryable(caught.value)


def test_named_error_event_is_a_stream_error() -> None:
    body = _sse(_chunk({"content": "a"}), 'event: error\ndata: {"message": "overloaded"}')
    with pytest.raises(StreamError, match="overloaded"):
        _parse_stream(body)


def test_a_json_answer_to_a_stream_request_is_parsed_as_json() -> None:
    response = _parse_stream(orjson.dumps(FULL_RESPONSE))
    assert response.id == "chatcmpl-123"


def test_streamed_and_non_streamed_answers_are_equal() -> None:
    whole = {
        "id": "chatcmpl-s",
        "model": "m",
        "system_fingerprint": "fp_1",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello"},
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
    }
    body = _sse(
        _chunk({"role": "assistant", "content": "Hel"}),
        _chunk({"content": "lo"}, finish="stop"),
        {"id": "chatcmpl-s", "choices": [], "usage": USAGE},
    )
    assert _parse_stream(body) == _parse(200, orjson.dumps(whole))


def test_keep_raw_of_a_stream_is_the_assembled_completion() -> None:
    body = _sse(_chunk({"content": "hi"}, finish="stop"))
    raw = _parse_stream(body, keep_raw=True).raw
    assert raw is not None
    assert orjson.loads(raw)["choices"][0]["message"]["content"] == "hi"


# -- what a server may send: validated at the edge, never a crash --------------------------------


def _completion_body(**changes: Any) -> bytes:
    body: dict[str, Any] = {
        "id": "c",
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }
    body.update(changes)
    return orjson.dumps(body)


def _parse_body(body: bytes) -> ChatResponse:
    return parse_response(HTTPResponse(200, {}, body), stream=False, keep_raw=False)


@pytest.mark.parametrize(
    "changes",
    [
        {"choices": []},
        {"choices": [{"index": 0, "finish_reason": "stop"}]},  # a choice without a message
        {"choices": [{"index": 0, "message": None, "finish_reason": "stop"}]},
    ],
)
def test_a_200_without_a_usable_choice_is_an_empty_response_error(changes: Any) -> None:
    with pytest.raises(EmptyResponseError):
        _parse_body(_completion_body(**changes))
    assert is_retryable(EmptyResponseError("x"))


def test_a_streamed_choice_without_any_delta_is_an_empty_response_error() -> None:
    body = _sse(
        {"id": "s", "choices": [{"index": 0, "finish_reason": None}]},
        {"id": "s", "choices": [{"index": 0, "finish_reason": "stop"}]},
    )
    with pytest.raises(EmptyResponseError, match="without any delta"):
        _parse_stream(body)


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"prompt_tokens": "12", "completion_tokens": " 3 ", "total_tokens": "15"}, (12, 3, 15)),
        ({"prompt_tokens": 12.0, "completion_tokens": 3.0, "total_tokens": 15.0}, (12, 3, 15)),
        ({"prompt_tokens": 12, "completion_tokens": None}, (12, None, None)),
    ],
)
def test_token_counts_sent_as_text_or_whole_floats_are_read_as_numbers(
    usage: Any, expected: tuple[int | None, ...]
) -> None:
    got = _parse_body(_completion_body(usage=usage)).usage
    assert (got.prompt_tokens, got.completion_tokens, got.total_tokens) == expected


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": 12.5},
        {"prompt_tokens": "twelve"},
        {"prompt_tokens": -1},
        {"prompt_tokens": True},
        {"prompt_tokens": [12]},
        {"prompt_tokens_details": {"cached_tokens": "a few"}},
    ],
)
def test_token_counts_that_are_no_count_are_the_rows_error(usage: Any) -> None:
    with pytest.raises(ResponseFormatError, match="not a count of tokens"):
        _parse_body(_completion_body(usage=usage))


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"model": 42}, "model is 42, not text"),
        ({"id": {"a": 1}}, "id is {'a': 1}, not text"),
        (
            {"choices": [{"index": 0, "message": {"content": 7}, "finish_reason": "stop"}]},
            "choices[0].message.content is 7, not text",
        ),
        (
            {"choices": [{"index": "0", "message": {"content": "x"}}]},
            "choices[0].index is '0', not a number",
        ),
        (
            {
                "choices": [
                    {
                        "index": 0,
                        "message": {"content": "x"},
                        "logprobs": {"content": [{"token": "x", "logprob": "low"}]},
                    }
                ]
            },
            "logprob is 'low', not a number",
        ),
    ],
)
def test_values_of_the_wrong_type_are_the_rows_error(changes: Any, fragment: str) -> None:
    with pytest.raises(ResponseFormatError) as caught:
        _parse_body(_completion_body(**changes))
    assert fragment in str(caught.value)


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "model",
                    "choices",
                    "message",
                    "content",
                    "usage",
                    "prompt_tokens",
                    "index",
                    "logprobs",
                    "token",
                    "logprob",
                    "top_logprobs",
                    "tool_calls",
                    "function",
                    "name",
                    "finish_reason",
                    "delta",
                    "error",
                    "code",
                    "type",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(body=_json, status=st.sampled_from([200, 200, 400, 429, 500]), stream=st.booleans())
def test_nothing_a_server_sends_escapes_as_anything_but_a_request_error(
    body: Any, status: int, stream: bool
) -> None:
    raw = orjson.dumps(body)
    for payload in (raw, b"data: " + raw + b"\n\ndata: [DONE]\n\n"):
        try:
            response = parse_response(
                HTTPResponse(status, {}, payload), stream=stream, keep_raw=True
            )
        except RequestError:
            continue
        for choice in response.choices:  # what is passed on has the types the columns need
            assert choice.content is None or isinstance(choice.content, str)
            assert isinstance(choice.index, int)
        usage = response.usage
        assert all(
            value is None or type(value) is int
            for value in (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)
        )
