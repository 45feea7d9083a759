"""Wrong answers, the ways models give them: JSON that does not parse or breaks its schema,
a label that is none of the asked ones. Pure and deterministic (from the answer's key).

Each takes the right answer and spoils it, so the rest of the completion -- tokens,
usage, logprobs -- stays what the server would send with such an answer.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import orjson
from jsonschema import validators

#: answers that name no label (the first one that mentions none of the labels is used)
_NOT_A_LABEL = ("unsure", "I cannot tell from this text.", "n/a", "It depends.")


def unparsable(valid: str, key: bytes) -> str:
    """``valid`` JSON text spoilt: wrapped in prose, cut short, or in single quotes."""
    variants = (
        f"Sure! Here is the JSON you asked for:\n{valid}",
        valid[: max(len(valid) // 2, 1)],
        valid.replace('"', "'") if '"' in valid else valid + " and more",
    )
    return variants[key[7] % len(variants)]


def breaking(value: Any, schema: dict[str, Any], key: bytes) -> Any:
    """A value close to ``value`` that ``schema`` rejects (a required property left out, a
    property of the wrong type, or the wrong type altogether); ``value`` itself when the
    schema accepts anything."""
    validator = validators.validator_for(schema)(schema)
    for candidate in _spoilt(value, key):
        if not validator.is_valid(candidate):
            return candidate
    return value


def _spoilt(value: Any, key: bytes) -> list[Any]:
    candidates: list[Any] = []
    if isinstance(value, dict) and value:
        names = list(value)
        name = names[key[9] % len(names)]
        fewer = copy.deepcopy(value)
        del fewer[name]
        candidates.append(fewer)
        for wrong in (12345, "not what the schema asks for", None):
            changed = copy.deepcopy(value)
            changed[name] = wrong
            candidates.append(changed)
    candidates += ["not what the schema asks for", 12345, [value], {"answer": value}]
    return candidates


def off_label(labels: Sequence[str]) -> str:
    """An answer that names none of ``labels``."""
    folded = [label.casefold() for label in labels]
    for text in _NOT_A_LABEL:
        if not any(label in text.casefold() for label in folded):
            return text
    return "?"


def off_label_json(labels: Sequence[str]) -> str:
    """A JSON label answer whose label is none of ``labels``."""
    return orjson.dumps({"label": off_label(labels)}).decode()
