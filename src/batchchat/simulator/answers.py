"""Deterministic answer text: filler content, labels, reasoning, token pieces and logprobs.

Everything here is a pure function of the request, so a test can tell which
row an answer belongs to and a re-run gives the same bytes:

* the content starts with ``sha256(last user message text)[:8]`` (the row
  tag), followed by filler words chosen from ``(model, seed, choice index,
  last user message)``;
* a label line (``Answer with one of: a, b, c``; also ``Labels:`` and
  ``Categories:``) in a system, developer or user message makes the content
  exactly one of those labels;
* tokens are the pieces of :mod:`batchchat.planning.tokens`' estimator, each carrying
  the whitespace before it (``" word"``), so usage agrees with the client's
  estimate and the logprob tokens concatenate to the content.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from collections.abc import Sequence
from typing import Any

from batchchat.planning.tokens import _PIECE

# the estimator's own pattern with the preceding whitespace attached: counts agree by construction
_TOKEN = re.compile(r"\s*(?:" + _PIECE.pattern + ")")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
_LABEL_LINE = re.compile(
    r"\b(?:answer with (?:exactly )?one of|labels|categories)\s*:[ \t]*(.+?)\s*$",
    re.IGNORECASE | re.MULTILINE,
)
_LABEL_SPLIT = re.compile(r"\s*(?:,|\||\bor\b)\s*", re.IGNORECASE)
_REASONING = re.compile(
    r"(?:^|[/:])o\d(?:$|-)|^gpt-5|deepseek-r(?:easoner|1)|thinking|qwq|reasoner", re.IGNORECASE
)

_WORD_LIST = """
the a of and to in is it that for on with as was at by this be from or an are not
but all can had her one our out day get has him his how man new now old see two
way who boy did its let put say she too use data model test row value batch token
answer result simple quick clear small large fast slow good fine well next last
same each more most some such only also very just then when where which while
"""
_WORDS = tuple(_WORD_LIST.split())
_CJK_WORDS = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于"
    "出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经"
)
_EFFORT_WORDS = {"minimal": 4, "low": 12, "medium": 32, "high": 80}
_ALTERNATIVES = ("the", "a", "and", "of", "to", "in", "is", "it", "that", "on", "for", "as")
#: the probability of a token that constrained decoding forced after top_logprobs were taken
FORCED_P = 0.0006


def digest(*parts: object) -> bytes:
    """64 stable pseudo-random bytes derived from ``parts``."""
    return hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=64).digest()


def unit(data: bytes, offset: int) -> float:
    """A number in [0, 1) read from two bytes of ``data``."""
    offset %= len(data) - 1
    return int.from_bytes(data[offset : offset + 2], "big") / 65536


def message_text(message: dict[str, Any]) -> str:
    """The text of a message's content (text parts joined; other parts ignored)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", "")) for part in content if part.get("type") == "text"
        )
    return ""


def row_text(messages: Sequence[dict[str, Any]]) -> str:
    """What identifies a row: the last user message (the whole conversation's last one if none)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message)
    return message_text(messages[-1])


def row_tag(text: str) -> str:
    """The first 8 hex digits of sha256(text): how an answer names the row it answers."""
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def filler_content(text: str, key: bytes) -> str:
    """The plain answer to a row: its tag, then 6–24 filler words (CJK for CJK prompts)."""
    count = 6 + key[0] % 19
    if _CJK.search(text):
        body = "".join(_CJK_WORDS[key[1 + i] % len(_CJK_WORDS)] for i in range(count)) + "。"
        return f"{row_tag(text)} {body}"
    words = " ".join(_WORDS[key[1 + i] % len(_WORDS)] for i in range(count))
    return f"{row_tag(text)} {words}."


def reasoning_content(text: str, key: bytes, effort: str | None) -> str:
    """The ``reasoning_content`` of a reasoning model; longer for a higher effort."""
    count = _EFFORT_WORDS[effort or "medium"]
    words = " ".join(_WORDS[key[(7 * i + 3) % len(key)] % len(_WORDS)] for i in range(count))
    return f"Thinking about {row_tag(text)}: {words}."


@functools.lru_cache(maxsize=256)
def is_reasoning_model(model: str) -> bool:
    """Named like a reasoning model: o1/o3/o4…, gpt-5, deepseek-reasoner/r1, *-thinking, qwq."""
    return _REASONING.search(model) is not None


@functools.lru_cache(maxsize=256)
def fingerprint(model: str) -> str:
    """A stable ``system_fingerprint`` per model."""
    return "fp_sim_" + hashlib.sha256(model.encode()).hexdigest()[:10]


# -- labels -------------------------------------------------------------------------------------


def find_labels(messages: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """The labels of the last label line in a system, developer or user message (or ())."""
    found: tuple[str, ...] = ()
    for message in messages:
        if message.get("role") in {"system", "developer", "user"}:
            found = _labels_in(message_text(message)) or found
    return found


@functools.lru_cache(maxsize=1024)
def _labels_in(text: str) -> tuple[str, ...]:
    lines = _LABEL_LINE.findall(text)
    if not lines:
        return ()
    labels = []
    for raw in _LABEL_SPLIT.split(lines[-1]):
        label = raw.strip().strip("\"'`*.").strip()
        if label and label not in labels:
            labels.append(label)
    return tuple(labels)


def pick_label(labels: Sequence[str], key: bytes) -> str:
    return labels[int.from_bytes(key[:4], "big") % len(labels)]


# -- tokens and logprobs ------------------------------------------------------------------------


def split_tokens(text: str) -> list[str]:
    """The answer's tokens: estimator pieces with their leading whitespace; they join to text."""
    pieces = _TOKEN.findall(text)
    rest = len(text) - sum(map(len, pieces))
    if rest and pieces:  # trailing whitespace belongs to the last token
        pieces[-1] += text[len(text) - rest :]
    return pieces


def token_logprobs(tokens: Sequence[str], top: int, key: bytes) -> list[dict[str, Any]]:
    """Logprobs of sampled tokens: each the most probable, at p ∈ [0.5, 1)."""
    return [
        _entry(token, 0.5 + 0.4999 * unit(key, 2 * i), top, (), key, i)
        for i, token in enumerate(tokens)
    ]


def label_logprobs(
    tokens: Sequence[str], labels: Sequence[str], top: int, key: bytes
) -> list[dict[str, Any]]:
    """Logprobs of a label answer: its first token competes with the other labels' first tokens.

    The chosen label is always the most probable, at p ∈ [0.45, 0.99), so the
    confidence varies from row to row; the other labels share the rest.
    """
    if not tokens:
        return []
    first = tokens[0]
    rivals = []
    for label in labels:
        pieces = split_tokens(label)
        if pieces and pieces[0] != first and pieces[0] not in rivals:
            rivals.append(pieces[0])
    p = 0.45 + 0.54 * unit(key, 5)
    weights = [1 + key[(11 + i) % len(key)] for i in range(len(rivals))]
    share = (1 - p) * 0.97 / (sum(weights) or 1)
    competing = tuple(
        (rival, min(w * share, 0.9 * p)) for rival, w in zip(rivals, weights, strict=True)
    )
    entries = [_entry(first, p, top, competing, key, 0)]
    for i, token in enumerate(tokens[1:], start=1):
        entries.append(_entry(token, 0.95 + 0.0499 * unit(key, 2 * i), top, (), key, i))
    return entries


def _entry(
    token: str,
    p: float,
    top: int,
    competing: tuple[tuple[str, float], ...],
    key: bytes,
    position: int,
) -> dict[str, Any]:
    logprob = math.log(p)
    candidates = [(token, logprob), *((t, math.log(q)) for t, q in competing)]
    taken = {t for t, _ in candidates}
    space = " " if token[:1].isspace() else ""
    rest = (1 - p - sum(q for _, q in competing)) * 0.6
    shift = key[position % len(key)]
    for j in range(len(_ALTERNATIVES)):
        if len(candidates) >= top:
            break
        alternative = space + _ALTERNATIVES[(shift + j) % len(_ALTERNATIVES)]
        if alternative not in taken:
            taken.add(alternative)
            candidates.append((alternative, math.log(max(rest * 0.5**j, 1e-9))))
    candidates.sort(key=lambda item: -item[1])
    return {
        "token": token,
        "logprob": logprob,
        "bytes": list(token.encode()),
        "top_logprobs": [
            {"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in candidates[:top]
        ],
    }


def forced_entry(entry: dict[str, Any], key: bytes) -> dict[str, Any]:
    """``entry`` as a server reports a token its grammar forced after taking ``top_logprobs``.

    The token keeps its place but gets p = :data:`FORCED_P`, and its ``top_logprobs``
    (as many as before) are the tokens the model preferred, without the chosen one;
    for a label, the other labels come first.
    """
    token = entry["token"]
    wanted = [c["token"] for c in entry["top_logprobs"] if c["token"] != token]
    space = " " if token[:1].isspace() else ""
    for j in range(len(_ALTERNATIVES)):
        alternative = space + _ALTERNATIVES[(key[0] + j) % len(_ALTERNATIVES)]
        if alternative != token and alternative not in wanted:
            wanted.append(alternative)
    top = [
        {"token": t, "logprob": math.log(0.5 * 0.5**j), "bytes": list(t.encode())}
        for j, t in enumerate(wanted[: len(entry["top_logprobs"])])
    ]
    return {**entry, "logprob": math.log(FORCED_P), "top_logprobs": top}
