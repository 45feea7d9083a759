"""A validated request → the simulated completion: choices, tool calls, usage. Pure.

The kind of answer is decided per choice, in this order: tool calls (when
``tool_choice`` requires one, or under ``auto`` when the last user message
names a tool), then ``json_schema``, ``json_object``, a label, and plain filler
text. ``stop`` cuts the content; the token budget (``max_completion_tokens``,
which includes reasoning tokens) truncates it with ``finish_reason: "length"``.
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from batchchat.planning.tokens import estimate_text_tokens
from batchchat.simulator import answers, misanswers
from batchchat.simulator.schema import instance_of
from batchchat.simulator.validate import SimRequest


@dataclass(slots=True)
class SimChoice:
    index: int
    content: str | None
    reasoning: str | None
    #: [{"id", "type", "function": {"name", "arguments"}}]
    tool_calls: list[dict[str, Any]]
    finish_reason: str
    #: the content's tokens (they join to ``content``)
    tokens: list[str]
    #: per-token logprob entries of the content, when requested
    logprobs: list[dict[str, Any]] | None
    reasoning_tokens: int
    completion_tokens: int


@dataclass(slots=True)
class Completion:
    id: str
    created: int
    model: str
    fingerprint: str
    choices: list[SimChoice]
    usage: dict[str, Any] = field(default_factory=dict)


def build_completion(
    request: SimRequest,
    prompt_tokens: int,
    cached_tokens: int,
    *,
    id: str,
    created: int,
    fault: str | None = None,
) -> Completion:
    """The whole completion of ``request``; deterministic apart from ``id`` and ``created``.

    ``fault``: the answer fault of this arrival (``invalid_json``, ``schema_mismatch``,
    ``off_label``), which spoils every choice's content; other faults change nothing here.
    """
    text = answers.row_text(request.messages)
    choices = [_choice(request, text, index, fault) for index in range(request.n)]
    completion_tokens = sum(choice.completion_tokens for choice in choices)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": sum(choice.reasoning_tokens for choice in choices),
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    return Completion(
        id, created, request.model, answers.fingerprint(request.model), choices, usage
    )


def completion_id() -> str:
    """A fresh ``chatcmpl-…`` id."""
    return "chatcmpl-sim" + os.urandom(10).hex()


def response_body(completion: Completion) -> dict[str, Any]:
    """The ``chat.completion`` object of a non-streamed response."""
    return {
        "id": completion.id,
        "object": "chat.completion",
        "created": completion.created,
        "model": completion.model,
        "system_fingerprint": completion.fingerprint,
        "service_tier": "default",
        "choices": [
            {
                "index": choice.index,
                "message": _message(choice),
                "logprobs": _logprobs(choice),
                "finish_reason": choice.finish_reason,
            }
            for choice in completion.choices
        ],
        "usage": completion.usage,
    }


def force_first_tokens(completion: Completion) -> bool:
    """Make each choice's first content token look forced by a grammar (see
    :func:`answers.forced_entry`); False when no choice has a token with logprobs."""
    forced = False
    for choice in completion.choices:
        if choice.logprobs and choice.content:
            key = answers.digest(completion.model, choice.index, choice.tokens[0])
            choice.logprobs[0] = answers.forced_entry(choice.logprobs[0], key)
            forced = True
    return forced


def _message(choice: SimChoice) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": choice.content,
        "refusal": None,
        "annotations": [],
    }
    if choice.reasoning is not None:
        message["reasoning_content"] = choice.reasoning
    if choice.tool_calls:
        message["tool_calls"] = choice.tool_calls
    return message


def _logprobs(choice: SimChoice) -> dict[str, Any] | None:
    if choice.logprobs is None:
        return None
    return {"content": choice.logprobs if choice.content is not None else None, "refusal": None}


# -- one choice ---------------------------------------------------------------------------------


def _choice(request: SimRequest, text: str, index: int, fault: str | None = None) -> SimChoice:
    key = answers.digest(request.model, request.seed, index, text)
    reasoning, thought = _reasoning(request, text, key)
    budget = None if request.max_tokens is None else request.max_tokens - thought
    if budget == 0:  # the whole budget went on reasoning
        return SimChoice(
            index, "", reasoning, [], "length", [], _no_logprobs(request), thought, thought
        )
    calls = _tool_calls(request, text, key)
    if calls:
        return _calling_choice(request, index, calls, budget, reasoning, thought)
    content, labels = _content(request, text, key, fault)
    content, finish = _cut_at_stop(content, request.stop)
    tokens = answers.split_tokens(content)
    if budget is not None and len(tokens) > budget:
        tokens, finish = tokens[:budget], "length"
        content = "".join(tokens)
    logprobs = None
    if request.logprobs:
        if labels:
            logprobs = answers.label_logprobs(tokens, labels, request.top_logprobs, key)
        else:
            logprobs = answers.token_logprobs(tokens, request.top_logprobs, key)
    used = thought + len(tokens)
    return SimChoice(index, content, reasoning, [], finish, tokens, logprobs, thought, used)


def _reasoning(request: SimRequest, text: str, key: bytes) -> tuple[str | None, int]:
    """The reasoning of a reasoning model (cut to the token budget) and its tokens."""
    if not answers.is_reasoning_model(request.model):
        return None, 0
    pieces = answers.split_tokens(answers.reasoning_content(text, key, request.reasoning_effort))
    if request.max_tokens is not None:
        pieces = pieces[: request.max_tokens]
    return "".join(pieces), len(pieces)


def _no_logprobs(request: SimRequest) -> list[dict[str, Any]] | None:
    return [] if request.logprobs else None


def _content(
    request: SimRequest, text: str, key: bytes, fault: str | None = None
) -> tuple[str, tuple[str, ...]]:
    """The full answer text, and the labels it was chosen from (if any)."""
    labels = answers.find_labels(request.messages)
    if fault == "off_label" and labels:
        if request.response_format == "json_object":
            return misanswers.off_label_json(labels), ()
        return misanswers.off_label(labels), ()
    content, chosen_from = _right_content(request, text, key, labels, fault)
    if fault == "invalid_json" and request.response_format != "text":
        return misanswers.unparsable(content, key), ()
    return content, chosen_from


def _right_content(
    request: SimRequest, text: str, key: bytes, labels: tuple[str, ...], fault: str | None
) -> tuple[str, tuple[str, ...]]:
    if request.response_format == "json_schema":
        value = instance_of(request.schema or {}, random.Random(key))
        if fault == "schema_mismatch" and request.schema:
            value = misanswers.breaking(value, request.schema, key)
        return orjson.dumps(value).decode(), ()
    if request.response_format == "json_object":
        if labels:
            return orjson.dumps({"label": answers.pick_label(labels, key)}).decode(), ()
        return orjson.dumps({"answer": answers.filler_content(text, key)}).decode(), ()
    if labels:
        return answers.pick_label(labels, key), labels
    return answers.filler_content(text, key), ()


def _cut_at_stop(content: str, stops: tuple[str, ...]) -> tuple[str, str]:
    cut = min((at for stop in stops if (at := content.find(stop)) >= 0), default=-1)
    return (content, "stop") if cut < 0 else (content[:cut], "stop")


# -- tool calls ---------------------------------------------------------------------------------


def _tool_calls(request: SimRequest, text: str, key: bytes) -> list[dict[str, Any]]:
    """The functions this choice calls: forced by ``tool_choice``, or named in the user's text."""
    if not request.tools or request.tool_choice == "none":
        return []
    if request.messages[-1].get("role") != "user" and request.tool_choice == "auto":
        return []  # after a tool result, answer in text
    named = [tool for tool in request.tools if _mentions(text, tool["name"])]
    if request.tool_choice not in {"auto", "required"}:
        chosen = [tool for tool in request.tools if tool["name"] == request.tool_choice]
    elif named:
        chosen = named if request.parallel_tool_calls else named[:1]
    elif request.tool_choice == "required":
        chosen = [request.tools[int.from_bytes(key[:2], "big") % len(request.tools)]]
    else:
        chosen = []
    calls = []
    for position, tool in enumerate(chosen):
        arguments = instance_of(
            tool.get("parameters") or {"type": "object"}, random.Random(key + bytes([position]))
        )
        calls.append(
            {
                "id": f"call_{answers.digest(key, position).hex()[:24]}",
                "type": "function",
                "function": {"name": tool["name"], "arguments": orjson.dumps(arguments).decode()},
            }
        )
    return calls


def _mentions(text: str, name: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text) is not None


def _calling_choice(
    request: SimRequest,
    index: int,
    calls: list[dict[str, Any]],
    budget: int | None,
    reasoning: str | None,
    reasoning_tokens: int,
) -> SimChoice:
    finish = "tool_calls"
    used = 0
    for call in calls:
        function = call["function"]
        cost = estimate_text_tokens(function["name"])
        pieces = answers.split_tokens(function["arguments"])
        if budget is not None and used + cost + len(pieces) > budget:
            pieces = pieces[: max(0, budget - used - cost)]
            function["arguments"] = "".join(pieces)
            finish = "length"
        used += cost + len(pieces)
    return SimChoice(
        index,
        None,
        reasoning,
        calls,
        finish,
        [],
        _no_logprobs(request),
        reasoning_tokens,
        reasoning_tokens + used,
    )
