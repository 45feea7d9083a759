"""Labeling: answers → labels, label probabilities from logprobs, votes, columns, report."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchchat.errors import SpecError
from batchchat.labels.columns import label_fields, label_report, label_values, with_votes
from batchchat.labels.labelset import LabelMatch, LabelSet
from batchchat.models import TokenLogprob, TopLogprob
from batchchat.planning.tokens import _PIECE
from batchchat.spec import load_spec

SENTIMENT = LabelSet(["positive", "negative", "neutral"])


def tok(token: str, p: float, top: dict[str, float] | None = None) -> TokenLogprob:
    """A token sampled with probability ``p`` and alternatives ``top`` (token → probability)."""
    alternatives = [TopLogprob(t, math.log(q), None) for t, q in (top or {}).items()]
    return TokenLogprob(token, math.log(p), None, alternatives)


def sim_tokens(text: str) -> list[str]:
    """Tokens the way the simulator cuts text: estimator pieces with their leading whitespace."""
    return re.findall(r"\s*(?:" + _PIECE.pattern + ")", text)


# -- matching answers ---------------------------------------------------------------------------

MATCHES = [
    ("positive", "positive"),
    ("Positive", "positive"),
    ("NEGATIVE", "negative"),
    ("  neutral  \n", "neutral"),
    ("Positive.", "positive"),
    ("positive!", "positive"),
    ('"negative"', "negative"),
    ("'Neutral'", "neutral"),
    ("“positive”", "positive"),
    ("**Positive**", "positive"),
    ("`neutral`", "neutral"),
    ("## Negative", "negative"),
    ("- positive", "positive"),
    ("Label: positive", "positive"),
    ("label:negative", "negative"),
    ("Answer: Neutral.", "neutral"),
    ("Sentiment: **Positive**", "positive"),
    ("**Sentiment:** negative", "negative"),
    ("Final answer: neutral", "neutral"),
    ("Here is my classification:\n\nNegative", "negative"),
    ("Label:\npositive", "positive"),
    ("positive\nBecause the reviewer loved it.", "positive"),
    ("Positive.\n\nThe review praises the battery; nothing negative is said.", "positive"),
    ("Negative - the customer wants a refund", "negative"),
    ("Negative — the customer wants a refund", "negative"),
    ("positive (the tone is upbeat)", "positive"),
    ("Positive, because it recommends the product", "positive"),
    ("positive because the reviewer loved it", "positive"),
    ("Neutral: the text only states facts", "neutral"),
    ('{"label": "positive"}', "positive"),
    ("<think>Could be negative... no.</think>\nPositive", "positive"),
    ("positive, not negative", "positive"),
    ("The reviewer likes the screen but not the price.\n\nFinal answer: positive", "positive"),
    ("The sentiment is:\nnegative", "negative"),
    ("Positive\n\nLabel: positive", "positive"),
]


@pytest.mark.parametrize(("answer", "label"), MATCHES)
def test_match_accepts_realistic_answers(answer: str, label: str) -> None:
    found = SENTIMENT.match(answer)
    assert found == LabelMatch(label, None)
    assert answer[found.start or 0 :].lower().lstrip("*").startswith(label)


UNMATCHED = [
    (None, "empty answer"),
    ("", "empty answer"),
    ("   \n", "empty answer"),
    ("I think it's somewhere between positive and negative", "several labels (positive, negative)"),
    ("positive or negative", "several labels (positive, negative)"),
    ("positive, negative", "several labels (positive, negative)"),
    ("positive, or negative", "several labels (positive, negative)"),
    ("Negative (or neutral)", "several labels (negative, neutral)"),
    ("Positive/Negative", "several labels (positive, negative)"),
    ("positive\n\nnegative", "several labels (positive, negative)"),
    ("Positive.\nFinal answer: neutral", "several labels (positive, neutral)"),
    ("Some reasoning.\nnegative aspects are minor", "mentions negative among other words"),
    ("It's positive.", "mentions positive among other words"),
    ("The sentiment is negative", "mentions negative among other words"),
    ("positive sentiment", "mentions positive among other words"),
    ("positively", "none of the labels (positive, negative, neutral)"),
    ("nonnegative", "none of the labels"),
    ("mixed", "none of the labels"),
    ("I cannot classify this text.", "none of the labels"),
]


@pytest.mark.parametrize(("answer", "why"), UNMATCHED)
def test_match_refuses_ambiguous_or_foreign_answers(answer: str | None, why: str) -> None:
    found = SENTIMENT.match(answer)
    assert found.label is None
    assert found.error is not None and why in found.error


def test_unmatched_error_quotes_a_short_snippet_of_the_answer() -> None:
    error = SENTIMENT.match("I really cannot tell " + "blah " * 40).error
    assert error is not None and "'I really cannot tell blah" in error and error.endswith("…'")


MULTIWORD = LabelSet(["very positive", "positive", "negative", "very negative", "not-spam"])


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        ("Very positive", "very positive"),
        ("very-positive", "very positive"),
        ("**VERY POSITIVE**", "very positive"),
        ("positive", "positive"),
        ("Label: very negative.", "very negative"),
        ("not spam", "not-spam"),
        ("Not-Spam", "not-spam"),
        ("NOT_SPAM", "not-spam"),
        ("not spam, it is a receipt", "not-spam"),
        ("not-spammy", None),
        ("very. positive", None),
        ("not - spam", None),
    ],
)
def test_longest_label_wins_and_labels_may_hold_spaces_and_hyphens(
    answer: str, label: str | None
) -> None:
    assert MULTIWORD.match(answer).label == label


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        ("B", "B"),
        ("(b)", "B"),
        ("B) The mitochondria", "B"),
        ("Answer: C", "C"),
        ("The answer is C", None),
    ],
)
def test_multiple_choice_letters(answer: str, label: str | None) -> None:
    assert LabelSet(["A", "B", "C", "D"]).match(answer).label == label


@pytest.mark.parametrize(
    ("parsed", "field", "label", "why"),
    [
        ({"label": "positive"}, "label", "positive", None),
        ({"label": "  Negative. "}, "label", "negative", None),
        ({"label": "**neutral**", "reason": "facts only"}, "label", "neutral", None),
        ({"result": {"label": "positive"}}, "result.label", "positive", None),
        ({"a.b": "neutral"}, "a.b", "neutral", None),
        ({"label": "positive or negative"}, "label", None, "field 'label': answer names several"),
        ({"label": "mixed"}, "label", None, "field 'label': answer matches none"),
        ({"sentiment": "positive"}, "label", None, "no 'label' field"),
        ({"label": None}, "label", None, "no 'label' field"),
        ({"label": ["positive"]}, "label", None, "holds a list, not a label"),
        (None, "label", None, "no JSON output"),
        (["positive"], "label", None, "JSON output is a list"),
    ],
)
def test_match_parsed_reads_the_label_field(
    parsed: Any, field: str, label: str | None, why: str | None
) -> None:
    found = SENTIMENT.match_parsed(parsed, field)
    assert found.label == label
    assert (found.error is None) if why is None else (why in (found.error or ""))


def test_match_parsed_takes_booleans_and_numbers() -> None:
    assert LabelSet(["true", "false"]).match_parsed({"ok": False}, "ok").label == "false"
    stars = LabelSet(["1", "2", "3"])
    assert stars.match_parsed({"stars": 2}, "stars").label == "2"
    assert stars.match_parsed({"stars": 3.0}, "stars").label == "3"
    assert stars.match_parsed({"stars": 2.5}, "stars").label is None


def test_from_spec_reads_output_labels_and_descriptions() -> None:
    base = {"input": {"path": "x.jsonl"}, "request": {"model": "m", "messages": []}}
    assert LabelSet.from_spec(load_spec(base)) is None
    spec = load_spec({**base, "output": {"labels": {"spam": "ads", "ham": "the rest"}}})
    labels = LabelSet.from_spec(spec)
    assert labels is not None
    assert labels.labels == ("spam", "ham") and labels.descriptions["ham"] == "the rest"


@pytest.mark.parametrize(
    ("labels", "why"),
    [
        ([], "at least one label"),
        (["Positive", "positive"], "'Positive' and 'positive' are the same label"),
        (["not-spam", "not spam"], "are the same label"),
        (["ok", "!!"], "'!!' has no letters or digits"),
    ],
)
def test_label_sets_that_cannot_work_are_spec_errors(labels: list[str], why: str) -> None:
    with pytest.raises(SpecError, match=re.escape(why)):
        LabelSet(labels)


# -- probabilities ------------------------------------------------------------------------------


def assert_probs(got: dict[str, float] | None, want: dict[str, float]) -> None:
    assert got is not None
    assert list(got) == list(want)
    assert got == pytest.approx(want, abs=1e-12)


def test_whole_word_tokens_drop_mass_of_non_labels_and_renormalise() -> None:
    first = tok(
        " positive", 0.6, {" positive": 0.6, " negative": 0.2, " neutral": 0.1, " The": 0.1}
    )
    assert_probs(
        SENTIMENT.probabilities(first),
        {"positive": 0.6 / 0.9, "negative": 0.2 / 0.9, "neutral": 0.1 / 0.9},
    )


def test_split_tokens_as_the_simulator_cuts_them() -> None:
    assert sim_tokens("positive") == ["posi", "tive"]
    first = tok("nega", 0.7, {"nega": 0.7, "posi": 0.2, "neut": 0.05, "the": 0.05})
    assert_probs(
        SENTIMENT.probabilities(first),
        {"positive": 0.2 / 0.95, "negative": 0.7 / 0.95, "neutral": 0.05 / 0.95},
    )


def test_case_space_quote_and_markdown_variants_are_merged() -> None:
    top = {"Pos": 0.3, " pos": 0.2, "POS": 0.1, '"pos': 0.05, "**Neg": 0.15, " neg": 0.2}
    assert_probs(
        SENTIMENT.probabilities(tok("Pos", 0.3, top)),
        {"positive": 0.65, "negative": 0.35, "neutral": 0.0},
    )


def test_a_token_longer_than_a_label_counts_for_the_longest_label_it_starts_with() -> None:
    top = {"positively": 0.5, "negatively": 0.3, "neutrality": 0.2}
    assert_probs(
        SENTIMENT.probabilities(tok("positively", 0.5, top)),
        {"positive": 0.5, "negative": 0.3, "neutral": 0.2},
    )
    labels = LabelSet(["neg", "negative"])
    assert_probs(
        labels.probabilities(tok("negatively", 1.0, {"negatively": 1.0})),
        {"neg": 0.0, "negative": 1.0},
    )


SHARED = LabelSet(["neutral", "negative", "neg"])


def test_a_shared_first_token_is_split_by_the_second_tokens_evidence() -> None:
    first = tok("neg", 0.6, {"neg": 0.6, "neut": 0.3, "the": 0.1})
    second = tok("ative", 0.8, {"ative": 0.8, ".": 0.15, "lect": 0.05})
    # "ative" continues negative; "." ends neg; "lect" ends no label but starts with neg
    assert_probs(
        SHARED.probabilities(first, second_token=second),
        {"neutral": 0.3 / 0.9, "negative": 0.6 * 0.8 / 0.9, "neg": 0.6 * 0.2 / 0.9},
    )


def test_a_shared_token_off_the_sampled_path_is_split_equally() -> None:
    first = tok("neut", 0.6, {"neut": 0.6, "neg": 0.4})
    second = tok("ral", 0.99, {"ral": 0.99, "ative": 0.01})  # evidence about "neut", not "neg"
    assert_probs(
        SHARED.probabilities(first, second_token=second),
        {"neutral": 0.6, "negative": 0.2, "neg": 0.2},
    )
    assert_probs(
        SHARED.probabilities(tok("neg", 0.4, {"neg": 0.4, "neut": 0.6})),
        {"neutral": 0.6, "negative": 0.2, "neg": 0.2},
    )


def test_a_one_letter_token_shared_by_two_labels_never_goes_to_one_of_them_only() -> None:
    probs = SENTIMENT.probabilities(tok("n", 1.0, {"n": 1.0}))
    assert probs == {"positive": 0.0, "negative": 0.5, "neutral": 0.5}


def test_yes_and_yes_but_are_told_apart_by_the_hyphen() -> None:
    labels = LabelSet(["yes", "yes-but", "no"])
    assert sim_tokens("yes-but") == ["yes", "-", "but"]
    first = tok("yes", 0.8, {"yes": 0.8, "no": 0.2})
    second = tok("-", 0.75, {"-": 0.75, ".": 0.25})
    assert_probs(
        labels.probabilities(first, second_token=second),
        {"yes": 0.8 * 0.25, "yes-but": 0.8 * 0.75, "no": 0.2},
    )
    spaced = tok(" but", 0.5, {" but": 0.5, ",": 0.5})  # "yes but" written with a space
    assert_probs(
        labels.probabilities(first, second_token=spaced),
        {"yes": 0.4, "yes-but": 0.4, "no": 0.2},
    )


def test_the_first_word_of_multiword_labels_is_split_by_the_next_word() -> None:
    assert sim_tokens("very positive") == ["very", " posi", "tive"]
    first = tok("very", 0.5, {"very": 0.5, "posi": 0.3, "nega": 0.2})
    equal = {"very positive": 0.25, "positive": 0.3, "negative": 0.2, "very negative": 0.25}
    assert_probs(MULTIWORD.probabilities(first), equal | {"not-spam": 0.0})
    second = tok(" posi", 0.9, {" posi": 0.9, " nega": 0.1})
    split = equal | {"very positive": 0.45, "very negative": 0.05}
    assert_probs(MULTIWORD.probabilities(first, second_token=second), split | {"not-spam": 0.0})


def test_the_sampled_token_counts_even_when_missing_from_top_logprobs() -> None:
    first = tok("neut", 0.1, {"posi": 0.5, "nega": 0.4})
    assert_probs(SENTIMENT.probabilities(first), {"positive": 0.5, "negative": 0.4, "neutral": 0.1})


@pytest.mark.parametrize(
    "first",
    [
        None,
        tok("posi", 0.9),  # logprobs without top_logprobs: no distribution to read
        tok("The", 0.9, {"The": 0.9, "I": 0.1}),
        tok("**", 0.9, {"**": 0.9, '"': 0.1}),
    ],
)
def test_no_label_evidence_gives_none(first: TokenLogprob | None) -> None:
    assert SENTIMENT.probabilities(first) is None


def test_all_zero_mass_gives_none() -> None:
    first = TokenLogprob("posi", -math.inf, None, [TopLogprob("posi", -math.inf, None)])
    assert SENTIMENT.probabilities(first) is None


def test_confidence_is_the_chosen_labels_probability_or_the_largest() -> None:
    probs = {"positive": 0.7, "negative": 0.2, "neutral": 0.1}
    assert LabelSet.confidence(probs, "negative") == 0.2
    assert LabelSet.confidence(probs) == 0.7
    assert LabelSet.confidence(None, "positive") is None


LABEL_POOLS = [
    ("positive", "negative", "neutral"),
    ("neutral", "negative", "neg"),
    ("yes", "yes-but", "no"),
    ("very positive", "positive", "not-spam"),
]


@st.composite
def logprob_cases(draw: st.DrawFn) -> tuple[LabelSet, TokenLogprob, TokenLogprob | None, int]:
    labels = draw(st.sampled_from(LABEL_POOLS))
    pieces = [label[:n] for label in labels for n in range(1, len(label) + 1)]
    pieces += [label + "ly" for label in labels] + ["the", "I", "**", "", "-", ".", "ative"]
    token = st.builds(
        lambda p, lead, upper: lead + (p.upper() if upper else p),
        st.sampled_from(pieces),
        st.sampled_from(["", " ", '"', "**"]),
        st.booleans(),
    )
    logprob = st.floats(min_value=-30, max_value=0)

    def entry(tops: list[tuple[str, float]]) -> TokenLogprob:
        chosen = tops[0] if tops else ("posi", -1.0)
        return TokenLogprob(chosen[0], chosen[1], None, [TopLogprob(t, lp, None) for t, lp in tops])

    first = entry(draw(st.lists(st.tuples(token, logprob), max_size=8)))
    second = draw(st.none() | st.lists(st.tuples(token, logprob), max_size=6).map(entry))
    return LabelSet(labels), first, second, draw(st.randoms()).randint(0, 10**6)


@settings(max_examples=300, deadline=None)
@given(logprob_cases())
def test_probabilities_are_a_distribution_over_the_labels(
    case: tuple[LabelSet, TokenLogprob, TokenLogprob | None, int],
) -> None:
    labels, first, second, _ = case
    probs = labels.probabilities(first, second_token=second)
    if probs is None:
        return
    assert tuple(probs) == labels.labels
    assert all(0.0 <= p <= 1.0 for p in probs.values())
    assert math.fsum(probs.values()) == pytest.approx(1.0, abs=1e-9)


@settings(max_examples=300, deadline=None)
@given(logprob_cases(), st.randoms())
def test_probabilities_do_not_depend_on_the_order_of_top_logprobs(
    case: tuple[LabelSet, TokenLogprob, TokenLogprob | None, int], rng: Any
) -> None:
    labels, first, second, _ = case

    def shuffled(entry: TokenLogprob) -> TokenLogprob:
        tops = list(entry.top_logprobs)
        rng.shuffle(tops)
        return TokenLogprob(entry.token, entry.logprob, entry.bytes, tops)

    again = labels.probabilities(shuffled(first), second_token=second and shuffled(second))
    assert again == labels.probabilities(first, second_token=second)


# -- votes --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Vote:
    """The majority of a row's samples (the test's oracle for the polars vote)."""

    label: str | None
    votes: dict[str, int]
    agreement: float | None


def vote(
    labels: Sequence[str | None],
    *,
    confidences: Sequence[float | None] | None = None,
    order: Sequence[str] | None = None,
) -> Vote:
    """The rule written plainly: most votes, then larger summed confidence, then label order."""
    if not labels:
        return Vote(None, {}, None)
    counts = Counter(label for label in labels if label is not None)
    if confidences is not None and len(confidences) != len(labels):
        raise ValueError("vote: labels and confidences differ in length")
    summed: dict[str, list[float]] = {label: [] for label in counts}
    for label, conf in zip(labels, confidences or [None] * len(labels), strict=True):
        if label is not None and conf is not None:
            summed[label].append(conf)
    rank = {label: i for i, label in enumerate(order or sorted(counts))}

    def standing(label: str) -> tuple[int, float, int, str]:
        return (-counts[label], -math.fsum(summed[label]), rank.get(label, len(rank)), label)

    ranked = sorted(counts, key=standing)
    if not ranked:
        return Vote(None, {}, 0.0)
    by_order = sorted(counts, key=lambda label: (rank.get(label, len(rank)), label))
    return Vote(ranked[0], {x: counts[x] for x in by_order}, counts[ranked[0]] / len(labels))


def vote_values(
    label_set: LabelSet,
    labels: Sequence[str | None],
    confidences: Sequence[float | None] | None = None,
) -> dict[str, Any]:
    """What :func:`with_votes` puts on the lines of one row with these samples."""
    df = pl.DataFrame(
        {"row_id": ["r"] * len(labels), "label": labels, "label_confidence": confidences},
        schema={"row_id": pl.String, "label": pl.String, "label_confidence": pl.Float64},
    )
    line = with_votes(df, label_set).row(0, named=True)
    return {k: line[k] for k in ("label_majority", "label_votes", "label_agreement")}


@pytest.mark.parametrize(
    ("labels", "confidences", "want"),
    [
        (["a", "a", "b"], None, Vote("a", {"a": 2, "b": 1}, 2 / 3)),
        (["b", "a", None, "a", "c"], None, Vote("a", {"a": 2, "b": 1, "c": 1}, 0.4)),
        (["b", "a"], None, Vote("a", {"a": 1, "b": 1}, 0.5)),  # tie: label order
        (["b", "a"], [0.9, 0.6], Vote("b", {"a": 1, "b": 1}, 0.5)),  # tie: summed confidence
        (
            ["a", "b", "b", "a", "a", "b"],
            [0.5, 0.4, 0.4, 0.1, None, 0.1],
            Vote("b", {"a": 3, "b": 3}, 0.5),
        ),
        (["c", "c", None], None, Vote("c", {"c": 2}, 2 / 3)),
        ([None, None], None, Vote(None, {}, 0.0)),
        ([], None, Vote(None, {}, None)),
    ],
)
def test_vote(labels: list[str | None], confidences: list[float | None] | None, want: Vote) -> None:
    assert vote(labels, confidences=confidences, order=["a", "b", "c"]) == want


def test_vote_without_an_order_breaks_ties_by_name_and_checks_lengths() -> None:
    assert vote(["zeta", "alpha"]).label == "alpha"
    with pytest.raises(ValueError, match="differ in length"):
        vote(["a"], confidences=[0.1, 0.2])


def test_vote_values_fill_every_label() -> None:
    assert vote_values(SENTIMENT, ["neutral", None, "neutral"]) == {
        "label_majority": "neutral",
        "label_votes": {"positive": 0, "negative": 0, "neutral": 2},
        "label_agreement": 2 / 3,
    }


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["r1", "r2", "r3"]),
            st.sampled_from(["positive", "negative", "neutral", None]),
            st.sampled_from([None, 0.25, 0.5, 0.75, 1.0]),
        ),
        min_size=1,
        max_size=24,
    )
)
def test_with_votes_agrees_with_vote_row_by_row(
    lines: list[tuple[str, str | None, float | None]],
) -> None:
    df = pl.DataFrame(
        lines,
        schema={"row_id": pl.String, "label": pl.String, "label_confidence": pl.Float64},
        orient="row",
    )
    out = with_votes(df, SENTIMENT)
    assert out.height == df.height and out["row_id"].to_list() == df["row_id"].to_list()
    for row_id, label_majority, votes, agreement in out.select(
        "row_id", "label_majority", "label_votes", "label_agreement"
    ).iter_rows():
        mine = [(label, conf) for r, label, conf in lines if r == row_id]
        expected = vote_values(SENTIMENT, [x for x, _ in mine], [c for _, c in mine])
        assert (label_majority, votes, agreement) == (
            expected["label_majority"],
            expected["label_votes"],
            pytest.approx(expected["label_agreement"]),
        )


# -- columns, per-sample values, report ---------------------------------------------------------


def test_label_fields_for_one_and_several_samples() -> None:
    one = label_fields(SENTIMENT, samples=1)
    assert [f.name for f in one] == ["label", "label_error", "label_probs", "label_confidence"]
    assert one[2].type == pa.struct([(x, pa.float64()) for x in SENTIMENT.labels])
    several = label_fields(SENTIMENT, samples=3)
    assert [f.name for f in several[4:]] == ["label_majority", "label_votes", "label_agreement"]
    assert several[5].type == pa.struct([(x, pa.int64()) for x in SENTIMENT.labels])


def sim_logprobs(content: str, first_top: dict[str, float]) -> list[TokenLogprob]:
    """Logprobs for ``content`` cut like the simulator; ``first_top`` at the label's first token."""
    entries = []
    for piece in sim_tokens(content):
        top = first_top if piece.strip() in {k.strip() for k in first_top} else {piece: 0.97}
        entries.append(tok(piece, top.get(piece, 0.97), top))
    return entries


def test_label_values_reads_probabilities_where_the_label_starts() -> None:
    content = "Label: positive"
    logprobs = sim_logprobs(content, {" posi": 0.8, " nega": 0.15, " neut": 0.05})
    assert [t.token for t in logprobs] == ["Labe", "l", ":", " posi", "tive"]
    values = label_values(SENTIMENT, content, None, logprobs, label_field=None)
    assert values["label"] == "positive" and values["label_error"] is None
    assert values["label_probs"] == pytest.approx(
        {"positive": 0.8, "negative": 0.15, "neutral": 0.05}
    )
    assert values["label_confidence"] == pytest.approx(0.8)


def test_label_values_with_a_label_field_parses_the_content_when_needed() -> None:
    content = '{"label": "negative", "why": "refund"}'
    logprobs = sim_logprobs(content, {"nega": 0.6, "posi": 0.4})
    values = label_values(SENTIMENT, content, None, logprobs, label_field="label")
    assert values["label"] == "negative"
    assert values["label_probs"] == pytest.approx(
        {"positive": 0.4, "negative": 0.6, "neutral": 0.0}
    )
    assert values["label_confidence"] == pytest.approx(0.6)
    as_text = label_values(SENTIMENT, None, '{"label": "Neutral"}', None, label_field="label")
    assert as_text["label"] == "neutral" and as_text["label_probs"] is None
    fenced = '```json\n{"label": "positive"}\n```'
    assert label_values(SENTIMENT, fenced, None, None, label_field="label")["label"] == "positive"
    broken = label_values(SENTIMENT, "not json", None, None, label_field="label")
    assert broken["label"] is None and "no JSON output" in broken["label_error"]


def test_label_values_of_an_unmatched_answer_has_no_probabilities() -> None:
    content = "It's positive"
    values = label_values(
        SENTIMENT, content, None, sim_logprobs(content, {" posi": 0.9}), label_field=None
    )
    assert values == {
        "label": None,
        "label_error": 'answer mentions positive among other words: "It\'s positive"',
        "label_probs": None,
        "label_confidence": None,
    }


def test_label_columns_round_trip_through_parquet_and_report(tmp_path: Path) -> None:
    answers = [
        ("r1", "positive", {"posi": 0.9, "nega": 0.1}),
        ("r1", "Positive.", {"Posi": 0.7, "nega": 0.3}),
        ("r1", "negative", {"nega": 0.5, "posi": 0.5}),
        ("r2", "no idea", {"no": 1.0}),
        ("r2", "neutral", {"neut": 0.6, "nega": 0.4}),
    ]
    rows = []
    for row_id, content, top in answers:
        values = label_values(
            SENTIMENT, content, None, sim_logprobs(content, top), label_field=None
        )
        rows.append({"row_id": row_id, **values})
    rows.append(
        {
            "row_id": "r3",
            "label": None,
            "label_error": None,
            "label_probs": None,
            "label_confidence": None,
        }
    )
    schema = pa.schema([pa.field("row_id", pa.string()), *label_fields(SENTIMENT, samples=1)])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / "part.parquet")

    df = with_votes(pl.read_parquet(tmp_path / "part.parquet"), SENTIMENT)
    assert df.schema["label_probs"] == pl.Struct({x: pl.Float64 for x in SENTIMENT.labels})
    assert df["label"].to_list() == ["positive", "positive", "negative", None, "neutral", None]
    assert df["label_majority"].to_list() == ["positive"] * 3 + ["neutral"] * 2 + [None]
    assert df["label_agreement"].to_list() == pytest.approx([2 / 3] * 3 + [0.5] * 2 + [0.0])

    report = label_report(df, SENTIMENT)
    assert report["answered"] == 5 and report["unmatched"] == 1 and report["unmatched_share"] == 0.2
    assert report["labels"]["positive"] == {"count": 2, "share": 0.4}
    assert report["labels"]["neutral"] == {"count": 1, "share": 0.2}
    assert report["mean_confidence"] == pytest.approx((0.9 + 0.7 + 0.5 + 0.6) / 4)
    majority = report["majority"]
    assert majority["answered"] == 2 and majority["unmatched"] == 0  # r3 has no answered sample
    assert majority["labels"]["positive"] == {"count": 1, "share": 0.5}
    assert majority["mean_agreement"] == pytest.approx((2 / 3 + 0.5) / 2)


def test_label_report_of_an_empty_table() -> None:
    empty = pl.DataFrame(schema={"label": pl.String, "label_error": pl.String})
    report = label_report(empty, SENTIMENT)
    assert report["answered"] == 0 and report["unmatched_share"] is None
    assert report["mean_confidence"] is None
    assert report["labels"]["negative"] == {"count": 0, "share": None}
