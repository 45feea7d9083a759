"""An answer survives the cache: encoded, decoded, equal; a damaged one is a miss."""

from __future__ import annotations

import zlib

import orjson

from batchchat.cache.codec import completion_object, decode_response, encode_response
from batchchat.models import ToolCall, Usage
from tests._results import logprobs_of, make_choice, make_result


def test_every_field_of_an_answer_comes_back() -> None:
    choices = [
        make_choice("positive", logprobs=logprobs_of("pos", "itive"), reasoning="hmm"),
        make_choice(
            None,
            index=1,
            tool_calls=[ToolCall("call_1", "function", "lookup", '{"q": 1}')],
            finish_reason="tool_calls",
            refusal=None,
        ),
        make_choice(None, index=2, refusal="I cannot", finish_reason="content_filter"),
    ]
    result = make_result("1", choices=choices, usage=Usage(12, 7, 19, 4, 2))
    assert result.response is not None
    assert decode_response(encode_response(result.response)) == result.response


def test_the_stored_form_is_a_chat_completion() -> None:
    result = make_result("1", content="hi")
    assert result.response is not None
    stored = orjson.loads(zlib.decompress(encode_response(result.response)))
    assert stored == completion_object(result.response)
    assert stored["object"] == "chat.completion"
    assert stored["choices"][0]["message"] == {
        "role": "assistant",
        "content": "hi",
        "refusal": None,
        "reasoning_content": None,
    }


def test_a_damaged_answer_is_a_miss_never_an_error() -> None:
    assert decode_response(b"not zlib") is None
    assert decode_response(zlib.compress(b"{not json")) is None
    assert decode_response(zlib.compress(b'{"choices": "nope"}')) is None
    assert decode_response(zlib.compress(b'{"choices": []}')) is None
