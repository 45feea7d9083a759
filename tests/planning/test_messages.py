"""Assembling one row's messages: splices put in place, nulls dropped, fresh messages named."""

from __future__ import annotations

from typing import Any

import pytest

from batchchat.errors import TemplateError
from batchchat.planning.messages import MessageLayout, assemble_messages, splice_value

SYSTEM = {"role": "system", "content": "Be brief."}
USER = {"role": "user", "content": "Q"}


def test_splices_are_put_in_place_and_only_row_messages_are_fresh() -> None:
    history = [{"role": "user", "content": "hi", "tool_call_id": None}]
    rendered = [SYSTEM, history, USER, {"role": "assistant", "content": "A"}]
    layout = MessageLayout(templated=(2,), spliced={1: "history"})
    messages, fresh = assemble_messages(rendered, layout, "r1")
    assert messages == [SYSTEM, {"role": "user", "content": "hi"}, USER, rendered[3]]
    assert fresh == [{"role": "user", "content": "hi"}, USER]
    assert messages[0] is SYSTEM  # static messages are not copied


def test_without_splices_the_rendered_list_is_used_as_it_is() -> None:
    rendered = [SYSTEM, {"role": "user", "content": [[{"type": "text", "text": "x"}]]}]
    messages, fresh = assemble_messages(rendered, MessageLayout(templated=(1,)), "r1")
    assert messages is rendered
    assert messages[1]["content"] == [{"type": "text", "text": "x"}]  # part lists made flat
    assert fresh == [messages[1]]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, []),
        ([], []),
        ('[{"role": "user", "content": "a"}]', [{"role": "user", "content": "a"}]),
        ({"role": "user", "content": "a", "name": None}, [{"role": "user", "content": "a"}]),
        (
            [{"role": "assistant", "content": None, "tool_calls": [{"id": "1", "x": None}]}],
            [{"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]}],
        ),
    ],
)
def test_what_a_splice_accepts(value: Any, expected: list[dict[str, Any]]) -> None:
    assert splice_value(value, "request.messages[1]", "h", "r1") == expected


def test_an_empty_conversation_names_the_row() -> None:
    with pytest.raises(TemplateError, match=r"no message to send.*'r9'"):
        assemble_messages([None], MessageLayout(spliced={0: "h"}), "r9")
