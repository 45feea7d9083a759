"""The Chat Completions message rules, in one place. Pure.

The planner checks the messages it renders against them (and says what is wrong in the
words of the spec), and the simulator checks what it receives against them (and answers
with OpenAI's 400s). :func:`message_findings` walks one message and yields every rule it
breaks as a :class:`Finding`; each side words the findings its own way.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

#: the roles of the Chat Completions API, in the order OpenAI lists them
MESSAGE_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
#: content part types of the Chat Completions API
PART_TYPES = frozenset({"text", "image_url", "input_audio", "file", "video_url", "refusal"})
#: roles whose message must carry content (an assistant's may carry tool_calls instead)
ROLES_NEEDING_CONTENT = frozenset({"developer", "system", "user", "tool"})
#: message keys that must be text when present
TEXT_KEYS = ("name", "tool_call_id")


@dataclass(frozen=True, slots=True)
class Finding:
    """One broken rule: at which message or part, which field of it, what kind, the value."""

    #: the message or part (``messages[0]``, ``messages[0].content[1]``)
    at: str
    #: its field (``content``, ``role``); None when the message or part itself is wrong
    field: str | None
    kind: Literal["missing", "not_one_of", "wrong_type", "empty"]
    value: Any = None
    #: the allowed values (not_one_of), or what the value should have been (wrong_type)
    expected: tuple[str, ...] | str = ()

    @property
    def where(self) -> str:
        return self.at if self.field is None else f"{self.at}.{self.field}"


def message_findings(message: Any, where: str) -> Iterator[Finding]:
    """Every rule ``message`` breaks, in a stable order; nothing when it is valid."""
    if not isinstance(message, dict):
        yield Finding(where, None, "wrong_type", message, "a mapping with role and content")
        return
    role = message.get("role")
    if role is None:
        yield Finding(where, "role", "missing")
        return
    if role not in MESSAGE_ROLES:
        yield Finding(where, "role", "not_one_of", role, MESSAGE_ROLES)
        return
    yield from _content_findings(role, message, where)
    for key in TEXT_KEYS:
        if key in message and not isinstance(message[key], str):
            yield Finding(where, key, "wrong_type", message[key], "a string")
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        yield Finding(where, "tool_call_id", "missing")
    if "tool_calls" in message and not isinstance(message["tool_calls"], list | type(None)):
        yield Finding(where, "tool_calls", "wrong_type", message["tool_calls"], "a list")


def _content_findings(role: str, message: dict[str, Any], where: str) -> Iterator[Finding]:
    content = message.get("content")
    if content is None:
        if role in ROLES_NEEDING_CONTENT or (role == "assistant" and not message.get("tool_calls")):
            yield Finding(where, "content", "missing")
        return
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        expected = "a string or an array of content parts"
        yield Finding(where, "content", "wrong_type", content, expected)
        return
    if not content:
        yield Finding(where, "content", "empty", content)
    for index, part in enumerate(content):
        yield from part_findings(part, f"{where}.content[{index}]")


def part_findings(part: Any, where: str) -> Iterator[Finding]:
    """Every rule one content part breaks."""
    if not isinstance(part, dict):
        yield Finding(where, None, "wrong_type", part, "a mapping with a type")
        return
    kind = part.get("type")
    if kind not in PART_TYPES:
        yield Finding(where, "type", "not_one_of", kind, tuple(sorted(PART_TYPES)))
        return
    if kind == "text":
        if not isinstance(part.get("text"), str):
            yield Finding(where, "text", "wrong_type", part.get("text"), "a string")
    elif kind == "image_url":
        image = part.get("image_url")
        if not (isinstance(image, dict) and isinstance(image.get("url"), str)):
            yield Finding(where, "image_url", "wrong_type", image, "a mapping with a string url")
    elif not isinstance(part.get(kind), dict | str):
        yield Finding(where, kind, "missing")
