"""Masking secrets in what a run writes or shows: the values it knows, and shapes of keys.

Keys are read from the environment (:mod:`batchchat.execute.endpoint`) and sent only in
request headers. What comes back -- an error message, a raw response, a server echoing a
header -- passes through a :class:`Redactor` before it reaches a file, a log or a screen:
it masks the exact values the run resolved (a key, every ``${VAR}`` in a header) and
anything shaped like a key or bearer token.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
#: shorter values are not masked: "abc" would blank half of every message
_MIN_SECRET_CHARS = 6
#: what an error message or raw body may carry that must not reach a file
_SHAPES = (
    (re.compile(r"(?i)\b(bearer)\s+[^\s\"',;]{8,}"), r"\1 ***"),
    (re.compile(r"\b(sk|pk|rk|sess)-[A-Za-z0-9_\-]{12,}"), r"\1-***"),
    # a value with a digit, or a long one: "invalid_api_key: Incorrect ..." is not a key
    (
        re.compile(
            r"(?i)((?:api[_-]?key|x-api-key|token)[\"']?\s*[:=]\s*[\"']?)"
            r"(?:(?=[^\s\"'&,;]*\d)[^\s\"'&,;]{8,}|[^\s\"'&,;]{20,})"
        ),
        r"\1***",
    ),
)


class Redactor:
    """Masks known secret values and key-shaped text: ``redact(text)``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        known = {secret for secret in secrets if len(secret) >= _MIN_SECRET_CHARS}
        #: the values themselves, longest first (one may contain another)
        self._known = sorted(known, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._known:
            text = text.replace(secret, MASK)
        for pattern, replacement in _SHAPES:
            text = pattern.sub(replacement, text)
        return text


#: masks the shapes of keys only (where no run's values are known)
redact_shapes = Redactor()
