"""The Chat Completions body's top-level fields: their JSON types, checked and parsed.

Known fields are checked against the type the API expects; a field given as text by a
template or ``--var`` where a number or boolean belongs is parsed (``"0.7"`` → 0.7).
Unknown fields pass through untouched, so new API parameters need no release.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from batchchat.errors import TemplateError
from batchchat.planning.messages import message_problems, show_value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def _is_mapping(value: Any) -> bool:
    return isinstance(value, dict)


def _is_texts(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


_Rule = tuple[str, Callable[[Any], bool]]
_NUMBER: _Rule = ("a number", _is_number)
_INTEGER: _Rule = ("an integer", _is_int)
_BOOLEAN: _Rule = ("true or false", _is_bool)
_TEXT: _Rule = ("a string", _is_text)
_MAPPING: _Rule = ("a mapping", _is_mapping)
#: the known Chat Completions fields and their JSON types; unknown fields pass untouched
FIELD_RULES: dict[str, _Rule] = {
    "model": ("a non-empty string", lambda v: isinstance(v, str) and bool(v.strip())),
    **dict.fromkeys(("temperature", "top_p", "presence_penalty", "frequency_penalty"), _NUMBER),
    **dict.fromkeys(("n", "max_tokens", "max_completion_tokens", "top_logprobs", "seed"), _INTEGER),
    **dict.fromkeys(("stream", "logprobs", "parallel_tool_calls", "store"), _BOOLEAN),
    **dict.fromkeys(("user", "reasoning_effort", "service_tier"), _TEXT),
    **dict.fromkeys(
        ("stream_options", "audio", "metadata", "logit_bias", "prediction", "web_search_options"),
        _MAPPING,
    ),
    "response_format": (
        "a mapping with a string 'type'",
        lambda v: isinstance(v, dict) and isinstance(v.get("type"), str),
    ),
    "stop": ("a string or a list of strings", lambda v: _is_text(v) or _is_texts(v)),
    "modalities": ("a list of strings", _is_texts),
    "tools": (
        "a list of tool mappings",
        lambda v: isinstance(v, list) and all(isinstance(t, dict) for t in v),
    ),
    "tool_choice": ("a string or a mapping", lambda v: _is_text(v) or _is_mapping(v)),
}
#: every OpenAI Chat Completions parameter (typed above, or passed as given)
KNOWN_FIELDS = frozenset(FIELD_RULES) | {
    "messages", "functions", "function_call", "verbosity", "prompt_cache_key",
    "safety_identifier",
}  # fmt: skip
#: where a server's own parameters go (vLLM's top_k, Qwen's enable_thinking, ...): merged
#: into the body as they are, without a warning (the name the openai client uses too)
EXTRA_BODY = "extra_body"
#: how alike an unknown key must be to a parameter to be taken for a typo of it
_TYPO_CUTOFF = 0.85


def unknown_field_findings(keys: Iterable[str]) -> tuple[list[str], list[str]]:
    """(problems, warnings) for the request keys that are not Chat Completions parameters.

    A key that looks like a parameter (``max_token``) is a typo, a problem: a server would
    reject every row, or ignore it in silence. Any other unknown key is passed through
    (a server's extension), with a warning until it is put under ``extra_body``.
    """
    problems, warnings = [], []
    for key in keys:
        if key in KNOWN_FIELDS or key == EXTRA_BODY:
            continue
        close = difflib.get_close_matches(key, KNOWN_FIELDS, n=1, cutoff=_TYPO_CUTOFF)
        if close:
            problems.append(
                f"request.{key}: not a Chat Completions parameter (did you mean '{close[0]}'?); "
                f"a server's own parameter goes under request.{EXTRA_BODY}"
            )
        else:
            warnings.append(
                f"request.{key}: not an OpenAI Chat Completions parameter; it is sent as "
                f"given (a server's own?). Put it under request.{EXTRA_BODY} to say so"
            )
    return problems, warnings


#: fields whose value may arrive as text from a template or --var and is parsed ("0.7" → 0.7)
_PARSED_FROM_TEXT = frozenset(
    k for k, rule in FIELD_RULES.items() if rule in (_NUMBER, _INTEGER, _BOOLEAN)
)


def field_problems(key: str, value: Any) -> list[str]:
    """What is wrong with one top-level body field (static check, no row involved)."""
    if key == "messages":
        if isinstance(value, list):
            return message_problems(value, "request.messages")
        return [
            "request.messages: must be a list of messages, or a template such as "
            f'"{{{{ conversation }}}}" giving the whole list; got {show_value(value)}'
        ]
    rule = FIELD_RULES.get(key)
    if rule is None or rule[1](_parsed(key, value)):
        return []
    return [f"request.{key}: must be {rule[0]}, got {show_value(value)}"]


def checked_body(body: dict[str, Any], dynamic: Iterable[str], row_id: str) -> dict[str, Any]:
    """Check (and parse, for numbers given as text) the templated fields of one body.

    ``messages`` is left to :func:`batchchat.planning.messages.assemble_messages`.
    """
    for key in dynamic:
        rule = FIELD_RULES.get(key)
        if rule is None:
            continue
        parsed = _parsed(key, body[key])
        if not rule[1](parsed):
            raise TemplateError(
                f"request.{key}: must be {rule[0]}, got {show_value(body[key])} (row id {row_id!r})"
            )
        body[key] = parsed
    return body


def _parsed(key: str, value: Any) -> Any:
    if key in _PARSED_FROM_TEXT and isinstance(value, str):
        try:
            return orjson.loads(value.strip())
        except orjson.JSONDecodeError:
            return value
    return value
