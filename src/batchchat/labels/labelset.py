"""Dataset labeling: answers → one of ``output.labels``, label probabilities, votes.

Pure logic, no I/O and no dataframes: matching, probabilities, votes. The
columns of the output and the report's label section are built from these in
:mod:`batchchat.labels.columns`.

Matching is strict about *what* was answered and tolerant about *how*: the
first or last line of the answer (or the text after a short ``Label:``-style
prefix there) must start with a whole label, followed by the end, a line
break, punctuation or an explanation ("positive\\nBecause …", "Positive – the
reviewer …", "positive because …"). An answer that names two labels, or
mentions one among other words ("I think it's positive"), is not a match and
gets an error saying why.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from batchchat.errors import SpecError
from batchchat.models import TokenLogprob, TopLogprob
from batchchat.spec import JobSpec

# a word: a run of letters or digits (underscores separate words, as hyphens do)
_WORD = re.compile(r"[^\W_]+")
# a reasoning block some models put before the answer; blanked, so offsets stay valid
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
# what may sit between the words of one label, or after a label that goes on ("positively")
_SOFT = frozenset(" \t-_'’‘\"“”*`~")
# ... but "positive - great" is a label followed by an explanation
_SPACED_HYPHEN = re.compile(r"\s-|-\s")
_PREFIX_MARKS = frozenset(":=：")
# how many words a "Label:"-style prefix may have ("Here is my classification:")
_MAX_PREFIX_WORDS = 8
# words that start an explanation on the label's own line ("positive because …")
_CONNECTORS = frozenset({"because", "since", "given", "due"})
# words that join two labels into one ambiguous answer ("positive or negative")
_JOINERS = frozenset({"or", "and", "to", "vs", "versus", "nor"})
# what a first token may start with before the label: whitespace, quotes, markdown, bullets
_LEAD = " \t\r\n\"'“”‘’*_`#>([{-"
_SEPARATORS = re.compile(r"[\s\-_]+")
_MISSING = object()


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def _surface(text: str) -> str:
    """How a label or token is compared as text: folded, separators as one space."""
    return _SEPARATORS.sub(" ", _fold(text))


@dataclass(frozen=True, slots=True)
class LabelMatch:
    """The label an answer was matched to, or why it matched none."""

    label: str | None
    error: str | None
    #: character offset of the label in the answer (free-text matches only)
    start: int | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class _Words:
    """An answer as folded words, where each starts, and the text between them."""

    words: tuple[str, ...]
    starts: tuple[int, ...]
    #: gaps[i] is the text before words[i]; gaps[-1] the text after the last word
    gaps: tuple[str, ...]


def _split_words(text: str) -> _Words:
    found = list(_WORD.finditer(text))
    ends = [0, *(m.end() for m in found)]
    gaps = [text[ends[i] : m.start()] for i, m in enumerate(found)]
    return _Words(
        tuple(_fold(m.group()) for m in found),
        tuple(m.start() for m in found),
        (*gaps, text[ends[-1] :]),
    )


def _is_soft(gap: str) -> bool:
    return all(c in _SOFT for c in gap) and not _SPACED_HYPHEN.search(gap)


class LabelSet:
    """The labels of a job and how answers and logprobs map onto them."""

    def __init__(self, labels: Sequence[str] | Mapping[str, str]) -> None:
        self.labels: tuple[str, ...] = tuple(labels)
        #: label → description, when ``output.labels`` is a mapping
        self.descriptions: dict[str, str] = dict(labels) if isinstance(labels, Mapping) else {}
        self._words = {label: tuple(_WORD.findall(_fold(label))) for label in self.labels}
        self._keys = {label: _surface(label).strip() for label in self.labels}
        self._check()
        # longest first, so "very positive" wins over "positive"; stable keeps label order
        self._longest_first = sorted(self.labels, key=lambda label: -len(self._words[label]))

    @classmethod
    def from_spec(cls, spec: JobSpec) -> LabelSet | None:
        """The job's label set; None when ``output.labels`` is not set."""
        return None if spec.output.labels is None else cls(spec.output.labels)

    def _check(self) -> None:
        if not self.labels:
            raise SpecError("output.labels: give at least one label")
        seen: dict[tuple[str, ...], str] = {}
        for label in self.labels:
            words = self._words[label]
            if not words:
                raise SpecError(f"output.labels: {label!r} has no letters or digits")
            if words in seen:
                raise SpecError(
                    f"output.labels: {seen[words]!r} and {label!r} are the same label "
                    "once case, spaces and punctuation are ignored"
                )
            seen[words] = label

    # -- answers --------------------------------------------------------------------------------

    def match(self, answer: str | None) -> LabelMatch:
        """The label a free-text answer gives, or an error naming why it gives none."""
        if answer is None or not answer.strip():
            return LabelMatch(None, "empty answer")
        words = _split_words(_THINK.sub(lambda m: " " * len(m.group()), answer))
        hits: dict[str, int] = {}  # label → where it starts, from the first and the last line
        for line in _line_starts(words):
            found = self._label_on_line(words, line)
            if isinstance(found, str):
                return LabelMatch(
                    None, f"answer names several labels ({found}): {_snippet(answer)}"
                )
            if found is not None:
                hits.setdefault(found[0], found[1])
        if len(hits) > 1:
            names = ", ".join(hits)
            return LabelMatch(None, f"answer names several labels ({names}): {_snippet(answer)}")
        if hits:
            label, start = next(iter(hits.items()))
            return LabelMatch(label, None, words.starts[start])
        return LabelMatch(None, self._why_unmatched(words, answer))

    def _label_on_line(self, words: _Words, line: int) -> tuple[str, int] | str | None:
        """(label, word index) of the line's answer; "a, b" when it names two; None."""
        for start in _starts(words, line):
            found = self._label_at(words, start)
            if found is None:
                continue
            label, end = found
            other = self._label_after(words, end, label)
            return (label, start) if other is None else f"{label}, {other}"
        return None

    def match_parsed(self, parsed: Mapping[str, Any] | None, field: str) -> LabelMatch:
        """The label in a structured-output field (``output.label_field``; dotted paths work)."""
        if parsed is None:
            return LabelMatch(None, f"no JSON output to read label_field {field!r} from")
        if not isinstance(parsed, Mapping):
            kind = type(parsed).__name__
            return LabelMatch(None, f"JSON output is a {kind}, not an object with {field!r}")
        value = _lookup(parsed, field)
        if value is _MISSING or value is None:
            return LabelMatch(None, f"JSON output has no {field!r} field")
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, int | float):
            value = str(int(value) if value == int(value) else value)
        elif not isinstance(value, str):
            kind = type(value).__name__
            return LabelMatch(None, f"field {field!r} holds a {kind}, not a label")
        found = self.match(value)
        return LabelMatch(found.label, found.error and f"field {field!r}: {found.error}")

    def _label_at(self, words: _Words, start: int) -> tuple[str, int] | None:
        """The longest label that starts at word ``start`` and is followed by a boundary."""
        for label in self._longest_first:
            end = start + len(self._words[label])
            if self._is_at(words, start, label) and _ends_label(words, end):
                return label, end
        return None

    def _is_at(self, words: _Words, start: int, label: str) -> bool:
        wanted = self._words[label]
        end = start + len(wanted)
        return words.words[start:end] == wanted and all(
            _is_soft(words.gaps[i]) for i in range(start + 1, end)
        )

    def _label_after(self, words: _Words, end: int, label: str) -> str | None:
        """Another label right after the matched one on its line ("positive, negative")."""
        if end >= len(words.words) or "\n" in words.gaps[end]:
            return None
        at = end + 1 if words.words[end] in _JOINERS else end
        for other in self._longest_first:
            if other != label and self._is_at(words, at, other):
                return other
        return None

    def _mentions(self, words: _Words) -> list[str]:
        """The labels an answer names anywhere as whole words, in order, each once."""
        found: list[str] = []
        at = 0
        while at < len(words.words):
            label = next((x for x in self._longest_first if self._is_at(words, at, x)), None)
            if label is not None and label not in found:
                found.append(label)
            at += len(self._words[label]) if label is not None else 1
        return found

    def _why_unmatched(self, words: _Words, answer: str) -> str:
        mentioned = self._mentions(words)
        if len(mentioned) > 1:
            return f"answer names several labels ({', '.join(mentioned)}): {_snippet(answer)}"
        if mentioned:
            return f"answer mentions {mentioned[0]} among other words: {_snippet(answer)}"
        return f"answer matches none of the labels ({', '.join(self.labels)}): {_snippet(answer)}"

    # -- probabilities --------------------------------------------------------------------------

    def probabilities(
        self, first_token_logprobs: TokenLogprob | None, *, second_token: TokenLogprob | None = None
    ) -> dict[str, float] | None:
        """One probability per label from the first answer token's ``top_logprobs``.

        Each alternative token ``t`` (the sampled one included) is compared
        folded, without leading whitespace, quotes or markdown; variants that
        fold alike (" Pos", "pos", "POS") are one token with their summed mass.
        ``t`` goes to the labels it is a prefix of (or equal to); when it is a
        prefix of none, to the longest label it starts with ("positively" →
        positive); otherwise it is dropped. When ``t`` fits several labels
        ("neg" for neg/negative/neutral…) its mass is split:

        * if the sampled path went through ``t`` and ``second_token`` has
          ``top_logprobs``, in proportion to the second-token mass that
          continues each label ("ative" → negative; ".", end of text or any
          other word → neg, the label ``t`` completes; a continuation fitting
          several labels is shared equally);
        * otherwise equally, since nothing else is known.

        The label masses are then renormalised to sum to 1 (mass of tokens that
        fit no label is dropped) -- unless the answer's own token is missing from
        ``top_logprobs``: a grammar or a constrained decoder forced a token the model
        did not rank (or an unlikely one was sampled), so the alternatives are not the
        distribution the answer came from. Then each label's share is of all the mass
        shown, the answer's own token included, so a forced label is as unlikely as
        the model thought it, never certain. None without ``top_logprobs`` or when no
        alternative fits a label. Sums are exact (``math.fsum``), so the result does
        not depend on the order of ``top_logprobs``.
        """
        if first_token_logprobs is None or not first_token_logprobs.top_logprobs:
            return None
        chosen = first_key(first_token_logprobs.token)
        masses = _masses(first_token_logprobs, first_key)
        parts: dict[str, list[float]] = {label: [] for label in self.labels}
        for key, mass in masses.items():
            targets = self.labels_for_token(key)
            evidence = second_token if key == chosen else None
            for label, share in self._shares(key, targets, evidence).items():
                parts[label].append(mass * share)
        sums = {label: math.fsum(values) for label, values in parts.items()}
        if not math.fsum(sums.values()) > 0:
            return None
        ranked = any(
            top.token == first_token_logprobs.token for top in first_token_logprobs.top_logprobs
        )
        total = math.fsum(sums.values()) if ranked else math.fsum(masses.values())
        return {label: value / total for label, value in sums.items()}

    def labels_for_token(self, key: str) -> list[str]:
        """The labels a first token (already folded as :meth:`probabilities` does) speaks for."""
        if not key:
            return []
        prefixed = [label for label in self.labels if self._keys[label].startswith(key)]
        if prefixed:
            return prefixed
        extended = [label for label in self.labels if key.startswith(self._keys[label])]
        return [max(extended, key=lambda label: len(self._keys[label]))] if extended else []

    def _shares(
        self, key: str, targets: list[str], second: TokenLogprob | None
    ) -> dict[str, float]:
        if len(targets) < 2 or second is None or not second.top_logprobs:
            return dict.fromkeys(targets, 1 / len(targets)) if targets else {}
        rests = {label: self._keys[label][len(key) :] for label in targets}
        weights: dict[str, list[float]] = {label: [] for label in targets}
        for token, mass in _masses(second, _surface).items():
            fits = [
                label
                for label, rest in rests.items()
                if rest and token and (rest.startswith(token) or token.startswith(rest))
            ]
            # no label goes on with this token: it ends the label that `key` completes
            fits = fits or [label for label, rest in rests.items() if not rest]
            for label in fits:
                weights[label].append(mass / len(fits))
        sums = {label: math.fsum(values) for label, values in weights.items()}
        total = math.fsum(sums.values())
        if not total > 0:
            return dict.fromkeys(targets, 1 / len(targets))
        return {label: value / total for label, value in sums.items()}

    @staticmethod
    def confidence(probs: Mapping[str, float] | None, label: str | None = None) -> float | None:
        """The probability of ``label`` (of the most probable label when not given)."""
        if not probs:
            return None
        return probs.get(label) if label is not None else max(probs.values())


def _line_starts(words: _Words) -> Iterable[int]:
    """The first word of the first line and of the last line that has words."""
    last = max((i for i, gap in enumerate(words.gaps[:-1]) if "\n" in gap), default=0)
    return dict.fromkeys((0, last))


def _starts(words: _Words, line: int) -> Iterable[int]:
    """Where a line's answer may start: at the line, or after a short "Label:" prefix."""
    yield line
    for at in range(line + 1, min(len(words.words), line + _MAX_PREFIX_WORDS + 1)):
        if any(c in _PREFIX_MARKS for c in words.gaps[at]):
            yield at


def _ends_label(words: _Words, end: int) -> bool:
    """Whether a label ending before word ``end`` ends the answer or its first clause."""
    if end == len(words.words):
        return True
    gap = words.gaps[end]
    if gap in {".", ","} and words.words[end - 1][-1:].isdigit() and words.words[end][:1].isdigit():
        return False  # "2.5" is not the label "2"
    return not _is_soft(gap) or words.words[end] in _CONNECTORS


def _snippet(answer: str, limit: int = 60) -> str:
    flat = " ".join(answer.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 1] + "…")


def _lookup(parsed: Mapping[str, Any], path: str) -> Any:
    if path in parsed:
        return parsed[path]
    node: Any = parsed
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def first_key(token: str) -> str:
    return _surface(_fold(token).lstrip(_LEAD).rstrip())


def _masses(entry: TokenLogprob, key_of: Callable[[str], str]) -> dict[str, float]:
    """Probability per folded token among ``entry``'s alternatives (the sampled one included)."""
    best: dict[str, float] = {}
    sampled = TopLogprob(entry.token, entry.logprob, entry.bytes)
    for top in (*entry.top_logprobs, sampled):
        if not math.isnan(top.logprob):
            best[top.token] = max(best.get(top.token, -math.inf), min(top.logprob, 0.0))
    merged: dict[str, list[float]] = {}
    for token, logprob in best.items():
        merged.setdefault(key_of(token), []).append(math.exp(logprob))
    return {key: math.fsum(values) for key, values in sorted(merged.items())}
