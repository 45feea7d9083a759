"""Chat messages: checking them, and splicing conversations from row columns into them. [pure]

A spec's ``messages`` is either one template rendering the whole list, or a
list whose items are messages (mappings, static or templated) and *splices*:
a lone template string such as ``"{{ history }}"`` whose value — a list of
messages (a list-of-struct column, or JSON text) or one message mapping — is
put in its place. :func:`assemble_messages` turns one row's rendered items
into the list that is sent, checking every message that came from the row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from batchchat.errors import TemplateError
from batchchat.planning.rules import MESSAGE_ROLES, Finding, message_findings


@dataclass(frozen=True, slots=True)
class MessageLayout:
    """Which items of a spec's ``messages`` change per row (static ones were checked once)."""

    #: indices of message mappings with templates in them
    templated: tuple[int, ...] = ()
    #: index of each splice → what it reads (its column's name, else its template), for errors
    spliced: Mapping[int, str] = field(default_factory=dict)
    #: ``messages`` is itself one template giving the whole list
    whole: bool = False


def assemble_messages(
    rendered: Any, layout: MessageLayout, row_id: str
) -> tuple[list[Any], list[Any]]:
    """One row's messages, and those of them not checked and counted up front.

    ``rendered`` is the rendered ``messages``: the whole list when ``layout.whole``,
    else one value per item of the spec's list, splices not yet spliced.
    """
    if layout.whole:
        messages = _whole_conversation(rendered, row_id)
        _raise_first(message_problems(messages, "request.messages"), row_id)
        return messages, messages
    if not layout.spliced:  # the common case: no splice, so indices stay those of the spec
        for index in layout.templated:
            if not is_plain_message(rendered[index]):
                rendered[index] = _with_flat_parts(rendered[index])
                where = f"request.messages[{index}]"
                _raise_first(_one_message_problems(rendered[index], where), row_id)
        return rendered, [rendered[i] for i in layout.templated]
    return _spliced(rendered, layout, row_id)


def _spliced(
    rendered: list[Any], layout: MessageLayout, row_id: str
) -> tuple[list[Any], list[Any]]:
    messages: list[Any] = []
    fresh: list[Any] = []
    templated = set(layout.templated)
    for index, item in enumerate(rendered):
        where = f"request.messages[{index}]"
        if index in layout.spliced:
            source = layout.spliced[index]
            spliced = splice_value(item, where, source, row_id)
            problems = message_problems(spliced, f"{where} ← {source}", allow_empty=True)
            _raise_first(problems, row_id)
            messages.extend(spliced)
            fresh.extend(spliced)
            continue
        if index in templated:
            item = _with_flat_parts(item)
            _raise_first(_one_message_problems(item, where), row_id)
            fresh.append(item)
        messages.append(item)
    if not messages:
        raise TemplateError(
            f"request.messages: no message to send: every splice was empty (row id {row_id!r})"
        )
    return messages, fresh


def splice_value(value: Any, where: str, source: str, row_id: str) -> list[Any]:
    """What a splice puts in place: the messages of a list, JSON text or one mapping.

    Null and an empty list splice nothing (a row without history). Null fields,
    which a list-of-struct column gives every message for the keys of the others,
    are dropped.
    """
    if value is None:
        return []
    value = _from_json_text(value, f"{where} ← {source}", row_id)
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise TemplateError(
            f"{where} ← {source}: a splice needs a list of messages, one message mapping or "
            f"their JSON text, got {show_value(value)} (row id {row_id!r})"
        )
    return [_without_nulls(message) for message in value]


def _whole_conversation(value: Any, row_id: str) -> Any:
    """A templated ``messages``: JSON text is parsed; null fields of struct columns dropped."""
    value = _from_json_text(value, "request.messages", row_id)
    if isinstance(value, list):
        return [_without_nulls(message) for message in value]
    return value


def _from_json_text(value: Any, where: str, row_id: str) -> Any:
    """Messages given as JSON text (a string column) parsed; any other value as it is."""
    if not isinstance(value, str):
        return value
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise TemplateError(
            f"{where}: text that is not JSON messages ({exc}): {show_value(value)} "
            f"(row id {row_id!r})"
        ) from None


def _without_nulls(message: Any) -> Any:
    # a list-of-struct column fills absent fields with null; only "content": null means something
    if not isinstance(message, dict):
        return message
    cleaned = {
        key: value if key == "content" and value is None else _drop_nulls(value)
        for key, value in message.items()
        if value is not None or key == "content"
    }
    return _with_flat_parts(cleaned)


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _with_flat_parts(message: Any) -> Any:
    """The content parts of a message, flat and without nulls.

    Part lists among the parts (``"{{ images | image_parts }}"``) are spliced in, and null
    fields dropped: a list-of-struct column of parts gives a text part ``image_url: null``.
    """
    if not isinstance(message, dict):
        return message
    content = message.get("content")
    if isinstance(content, list):
        flat: list[Any] = []
        for part in content:
            flat.extend(part if isinstance(part, list) else (part,))
        message["content"] = [_drop_nulls(part) for part in flat]
    return message


# -- checking -------------------------------------------------------------------------------------


def message_problems(
    messages: Any, location: str, *, first: int = 0, allow_empty: bool = False
) -> list[str]:
    """Every problem of a list of chat messages, each with its location.

    ``first`` is the index of the first message in the spec's list, for the locations.
    """
    if not isinstance(messages, list) or not (messages or allow_empty):
        return [f"{location}: must be a non-empty list of messages, got {show_value(messages)}"]
    return [
        problem
        for index, message in enumerate(messages, start=first)
        for problem in _one_message_problems(message, f"{location}[{index}]")
    ]


def is_plain_message(message: Any) -> bool:
    """The common case, {role, content: text}, recognised without the full check."""
    return (
        type(message) is dict
        and len(message) == 2
        and type(message.get("content")) is str
        and message.get("role") in MESSAGE_ROLES
    )


def _one_message_problems(message: Any, where: str) -> list[str]:
    return [_worded(finding, message) for finding in message_findings(message, where)]


def _worded(finding: Finding, message: Any) -> str:
    """A broken rule in the words of a job spec."""
    at, key, where, got = finding.at, finding.field, finding.where, show_value(finding.value)
    if key is None and isinstance(message, dict):
        return f"{at}: a content part is a mapping with a string 'type', got {got}"
    if key is None:
        return f"{at}: a message is a mapping with role and content, got {got}"
    if key == "role":
        roles = ", ".join(sorted(MESSAGE_ROLES))
        return f"{where}: must be one of {roles}, got {got}"
    if key == "content" and finding.kind == "missing":
        role = message.get("role")
        if role == "assistant":
            return f"{at}: an assistant message needs content or tool_calls"
        return f"{at}: a {role} message needs content"
    if key == "content" and finding.kind == "empty":
        return f"{where}: an empty list of parts (give text or at least one part)"
    if key == "content":
        return f"{where}: must be a string, null or a list of parts, got {got}"
    if key == "tool_call_id" and finding.kind == "missing":
        return f"{at}: a tool message needs tool_call_id"
    if key == "type" and not isinstance(finding.value, str):
        return f"{at}: a content part is a mapping with a string 'type', got {got}"
    if finding.kind == "not_one_of":
        return f"{where}: must be one of {', '.join(finding.expected)}, got {got}"
    if finding.kind == "missing":
        return f"{at}: a {key} part needs its {key} field"
    expected = finding.expected if isinstance(finding.expected, str) else "valid"
    return f"{where}: must be {expected}, got {got}"


def _raise_first(problems: list[str], row_id: str) -> None:
    if problems:
        raise TemplateError(f"{problems[0]} (row id {row_id!r})")


def show_value(value: Any) -> str:
    """``str 'abc'``, ``int 5``, ``null None``: a value with its type, cut to a readable length."""
    kind = "null" if value is None else type(value).__name__
    text = repr(value)
    return f"{kind} {text if len(text) <= 60 else text[:57] + '...'}"
