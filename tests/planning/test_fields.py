"""The body's top-level fields: types checked once for static values, per row for templated."""

from __future__ import annotations

from typing import Any

import pytest

from batchchat.errors import TemplateError
from batchchat.planning.fields import checked_body, field_problems


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("temperature", 0.7, None),
        ("temperature", "0.7", None),  # text that parses: a template or --var gave it
        ("temperature", "hot", "request.temperature: must be a number, got str 'hot'"),
        ("max_tokens", 1.5, "request.max_tokens: must be an integer, got float 1.5"),
        ("logprobs", True, None),
        ("logprobs", 1, "request.logprobs: must be true or false, got int 1"),
        ("stop", ["\n", "END"], None),
        ("stop", ["\n", 3], "request.stop: must be a string or a list of strings"),
        ("response_format", {"type": "json_object"}, None),
        ("response_format", {"schema": {}}, "must be a mapping with a string 'type'"),
        ("model", "  ", "request.model: must be a non-empty string"),
        ("x_vendor_extension", object, None),  # unknown fields pass untouched
        ("messages", "hello", "request.messages: must be a list of messages"),
    ],
)
def test_field_problems(key: str, value: Any, problem: str | None) -> None:
    problems = field_problems(key, value)
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0]


def test_checked_body_parses_text_numbers_and_names_the_row() -> None:
    body = {"temperature": "0.25", "n": "2", "stream": "false", "user": "42"}
    checked = checked_body(body, ["temperature", "n", "stream", "user"], "r7")
    assert checked == {"temperature": 0.25, "n": 2, "stream": False, "user": "42"}
    assert type(checked["n"]) is int
    with pytest.raises(TemplateError, match=r"request\.top_p: must be a number.*row id 'r9'"):
        checked_body({"top_p": "high"}, ["top_p"], "r9")
