"""Deterministic answers over HTTP: per row and seed, n, stop, length, usage, caching, reasoning,
logprobs and labels; and the pure token and label helpers beneath them."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchchat.planning.tokens import estimate_prompt_tokens, estimate_text_tokens
from batchchat.simulator import SimulatorServer
from batchchat.simulator.answers import find_labels, is_reasoning_model, split_tokens
from batchchat.simulator.stats import CACHE_BLOCK
from tests.simulator._client import chat, user

LABELS = "Classify the review. Answer with one of: positive, negative, neutral"


async def content_of(
    http: aiohttp.ClientSession, sim: SimulatorServer, body: dict[str, Any]
) -> str:
    reply = await chat(http, sim, body)
    assert reply.status == 200, reply.json
    content = reply.json["choices"][0]["message"]["content"]
    assert isinstance(content, str)
    return content


async def test_each_row_gets_its_own_answer_tagged_with_its_hash(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    rows = [f"row number {i}" for i in range(20)]
    answers = [await content_of(http, simulator, user(text)) for text in rows]
    assert len(set(answers)) == len(rows)
    for text, answer in zip(rows, answers, strict=True):
        assert answer.startswith(hashlib.sha256(text.encode()).hexdigest()[:8] + " ")


async def test_same_request_and_seed_same_answer_other_seed_other_answer(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    first = await content_of(http, simulator, user("tell me", seed=7))
    again = await content_of(http, simulator, user("tell me", seed=7))
    other = await content_of(http, simulator, user("tell me", seed=8))
    assert first == again
    assert first != other


async def test_response_shape_and_fingerprint(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    reply = await chat(http, simulator, user("hello"))
    body = reply.json
    assert reply.headers["content-type"].startswith("application/json")
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert isinstance(body["created"], int)
    assert body["model"] == "gpt-4o-mini"
    assert body["system_fingerprint"].startswith("fp_sim_")
    choice = body["choices"][0]
    assert choice["index"] == 0
    assert choice["finish_reason"] == "stop"
    assert choice["logprobs"] is None
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["refusal"] is None
    other_model = await chat(http, simulator, {**user("hello"), "model": "sim-small"})
    assert other_model.json["system_fingerprint"] != body["system_fingerprint"]


async def test_n_choices_are_distinct_and_indexed(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    reply = await chat(http, simulator, user("many", n=4))
    choices = reply.json["choices"]
    assert [choice["index"] for choice in choices] == [0, 1, 2, 3]
    assert len({choice["message"]["content"] for choice in choices}) == 4
    usage = reply.json["usage"]
    expected = sum(estimate_text_tokens(choice["message"]["content"]) for choice in choices)
    assert usage["completion_tokens"] == expected


async def test_usage_agrees_with_the_offline_estimate(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Summarise: 北京是中国的首都。 And 42 more words."},
    ]
    reply = await chat(http, simulator, {"model": "m", "messages": messages})
    usage = reply.json["usage"]
    content = reply.json["choices"][0]["message"]["content"]
    assert usage["prompt_tokens"] == estimate_prompt_tokens(messages)
    assert usage["completion_tokens"] == estimate_text_tokens(content)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == 0
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0


async def test_max_tokens_truncates_with_finish_reason_length(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    full = await content_of(http, simulator, user("long one"))
    for key in ("max_tokens", "max_completion_tokens"):
        reply = await chat(http, simulator, user("long one", **{key: 3}))
        choice = reply.json["choices"][0]
        assert choice["finish_reason"] == "length"
        assert reply.json["usage"]["completion_tokens"] == 3
        assert full.startswith(choice["message"]["content"])
        assert choice["message"]["content"] == "".join(split_tokens(full)[:3])
    roomy = await chat(http, simulator, user("long one", max_tokens=1000))
    assert roomy.json["choices"][0]["finish_reason"] == "stop"


async def test_stop_sequences_cut_the_answer(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    full = await content_of(http, simulator, user("stop me"))
    word = full.split(" ")[3]
    reply = await chat(http, simulator, user("stop me", stop=["zzz-not-there", f" {word}"]))
    choice = reply.json["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"] == full[: full.index(f" {word}")]
    assert reply.json["usage"]["completion_tokens"] == estimate_text_tokens(
        choice["message"]["content"]
    )


async def test_a_repeated_prompt_prefix_reports_cached_tokens(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    system = {"role": "system", "content": "Rules: " + "be precise and kind. " * 40}
    system_tokens = estimate_prompt_tokens([system]) - estimate_prompt_tokens([])

    def body(question: str) -> dict[str, Any]:
        return {"model": "m", "messages": [system, {"role": "user", "content": question}]}

    first = await chat(http, simulator, body("first question"))
    second = await chat(http, simulator, body("second question"))
    other_model = await chat(http, simulator, {**body("third"), "model": "other"})
    assert first.json["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    cached = second.json["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached == (system_tokens + 3) // CACHE_BLOCK * CACHE_BLOCK  # + the reply priming
    assert 0 < cached <= second.json["usage"]["prompt_tokens"]
    assert other_model.json["usage"]["prompt_tokens_details"]["cached_tokens"] == 0


async def test_a_short_prefix_is_never_cached(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    await chat(http, simulator, user("short"))
    again = await chat(http, simulator, user("short"))
    assert again.json["usage"]["prompt_tokens_details"]["cached_tokens"] == 0


@pytest.mark.parametrize(
    ("model", "reasoning"),
    [
        ("o1", True),
        ("o3-mini", True),
        ("o4-mini-2025-04-16", True),
        ("openai/o3", True),
        ("gpt-5-mini", True),
        ("deepseek-reasoner", True),
        ("deepseek-r1-distill-qwen", True),
        ("qwen3-235b-a22b-thinking-2507", True),
        ("qwq-32b", True),
        ("gpt-4o", False),
        ("gpt-4o-mini", False),
        ("deepseek-chat", False),
        ("llama-3-70b", False),
        ("solo-model", False),
    ],
)
def test_reasoning_models_are_recognised_by_name(model: str, reasoning: bool) -> None:
    assert is_reasoning_model(model) is reasoning


async def test_reasoning_models_report_reasoning(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    reply = await chat(http, simulator, {**user("think"), "model": "o3-mini"})
    message = reply.json["choices"][0]["message"]
    usage = reply.json["usage"]
    reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
    assert message["reasoning_content"]
    assert reasoning == estimate_text_tokens(message["reasoning_content"])
    assert usage["completion_tokens"] == reasoning + estimate_text_tokens(message["content"])
    high = await chat(
        http, simulator, {**user("think"), "model": "o3-mini", "reasoning_effort": "high"}
    )
    assert high.json["usage"]["completion_tokens_details"]["reasoning_tokens"] > reasoning


async def test_a_budget_spent_on_reasoning_leaves_empty_content(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    reply = await chat(
        http, simulator, {**user("think"), "model": "o3-mini", "max_completion_tokens": 5}
    )
    choice = reply.json["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["content"] == ""
    usage = reply.json["usage"]
    assert usage["completion_tokens"] == usage["completion_tokens_details"]["reasoning_tokens"] == 5


async def test_logprobs_have_the_real_shape(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    reply = await chat(http, simulator, user("probabilities", logprobs=True, top_logprobs=3))
    choice = reply.json["choices"][0]
    entries = choice["logprobs"]["content"]
    assert choice["logprobs"]["refusal"] is None
    assert "".join(entry["token"] for entry in entries) == choice["message"]["content"]
    assert len(entries) == reply.json["usage"]["completion_tokens"]
    # the leading-space convention of real tokenizers: " word", never a bare " "
    assert sum(entry["token"].startswith(" ") for entry in entries) >= 5
    assert all(entry["token"].strip() for entry in entries)
    for entry in entries:
        assert set(entry) == {"token", "logprob", "bytes", "top_logprobs"}
        assert entry["bytes"] == list(entry["token"].encode())
        assert entry["logprob"] <= 0
        top = entry["top_logprobs"]
        assert len(top) == 3
        assert top[0]["token"] == entry["token"]
        assert [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
        assert len({t["token"] for t in top}) == 3
        assert sum(math.exp(t["logprob"]) for t in top) <= 1.0 + 1e-9
    without_top = await chat(http, simulator, user("probabilities", logprobs=True))
    assert all(
        e["top_logprobs"] == [] for e in without_top.json["choices"][0]["logprobs"]["content"]
    )


# -- labels -------------------------------------------------------------------------------------


async def test_a_label_line_makes_the_answer_one_label(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    chosen = []
    for i in range(30):
        body = {
            "model": "m",
            "messages": [
                {"role": "system", "content": LABELS},
                {"role": "user", "content": f"review {i}"},
            ],
        }
        chosen.append(await content_of(http, simulator, body))
    assert set(chosen) == {"positive", "negative", "neutral"}  # each label shows up over 30 rows
    again = await content_of(
        http,
        simulator,
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": LABELS},
                {"role": "user", "content": "review 0"},
            ],
        },
    )
    assert again == chosen[0]


async def test_label_logprobs_rank_the_other_labels_below_the_answer(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    confidences = []
    for i in range(12):
        body = {
            "model": "m",
            "messages": [{"role": "user", "content": f"{LABELS}\n\nText: item {i}"}],
            "logprobs": True,
            "top_logprobs": 5,
        }
        reply = await chat(http, simulator, body)
        choice = reply.json["choices"][0]
        first = choice["logprobs"]["content"][0]
        label = choice["message"]["content"]
        assert label in {"positive", "negative", "neutral"}
        top_tokens = [t["token"] for t in first["top_logprobs"]]
        assert top_tokens[0] == first["token"] == split_tokens(label)[0]
        rivals = {split_tokens(other)[0] for other in ("positive", "negative", "neutral")} - {
            first["token"]
        }
        assert rivals <= set(top_tokens)
        assert sum(math.exp(t["logprob"]) for t in first["top_logprobs"]) <= 1.0 + 1e-9
        confidences.append(math.exp(first["logprob"]))
    assert min(confidences) < 0.75 < max(confidences)  # confidence varies across rows


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        ("Answer with one of: positive, negative, neutral", ("positive", "negative", "neutral")),
        ("answer with exactly one of: yes | no", ("yes", "no")),
        ("Labels: spam or ham.", ("spam", "ham")),
        (
            "Read this.\nCategories: 'sports', 'politics', 'tech'\nThanks",
            ("sports", "politics", "tech"),
        ),
        ("- Labels: A, B, A", ("A", "B")),
        ("No label line here: a, b", ()),
    ],
)
def test_label_lines(text: str, labels: tuple[str, ...]) -> None:
    assert find_labels([{"role": "system", "content": text}]) == labels


def test_labels_in_assistant_messages_are_ignored() -> None:
    assert find_labels([{"role": "assistant", "content": "Labels: a, b"}]) == ()


async def test_json_object_with_labels_holds_the_label(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    body = {
        "model": "m",
        "messages": [{"role": "system", "content": LABELS}, {"role": "user", "content": "great!"}],
        "response_format": {"type": "json_object"},
    }
    reply = await chat(http, simulator, body)
    value = orjson.loads(reply.json["choices"][0]["message"]["content"])
    assert value["label"] in {"positive", "negative", "neutral"}


# -- pure token helpers -------------------------------------------------------------------------


@given(st.text(max_size=200))
def test_tokens_join_to_the_text_and_count_like_the_estimate(text: str) -> None:
    tokens = split_tokens(text)
    if estimate_text_tokens(text):
        assert "".join(tokens) == text
    assert len(tokens) == estimate_text_tokens(text)
