"""Planning: ids, bodies with every parameter correctly typed, hashes, seeds, skip, checks."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchchat.errors import SpecError, TemplateError
from batchchat.models import ChatRequest
from batchchat.planning.estimate import batch_line
from batchchat.planning.planner import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    compile_plan,
    derive_seed,
    max_output_tokens,
    request_hash,
)
from batchchat.planning.tokens import (
    PER_MESSAGE_TOKENS,
    REPLY_PRIMING_TOKENS,
    estimate_prompt_tokens,
    estimate_text_tokens,
    text_counter,
)
from batchchat.planning.validate import plan_problems
from batchchat.spec import JobSpec, load_spec

ROWS = [
    {"id": "a", "text": "Great mug", "rating": 5, "temp": 0.2, "tags": ["x", "y"]},
    {"id": "b", "text": "Leaks", "rating": 1, "temp": 0.7, "tags": []},
    {"id": "c", "text": "Fine", "rating": 3, "temp": 1.0, "tags": ["z"]},
]
USER = {"role": "user", "content": "Review: {{ text }}"}


def make_spec(
    tmp_path: Path,
    request: dict[str, Any] | None = None,
    rows: list[dict[str, Any]] | None = None,
    **top: Any,
) -> JobSpec:
    path = tmp_path / "in.jsonl"
    pl.DataFrame(rows or ROWS).write_ndjson(path)
    data: dict[str, Any] = {
        "input": {"path": str(path), "id_column": "id"},
        "request": {"model": "gpt-4o-mini", "messages": [USER], **(request or {})},
        "base_dir": str(tmp_path),
    }
    for key, value in top.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return load_spec(data)


def plan(spec: JobSpec, **kw: Any) -> list[ChatRequest]:
    return list(compile_plan(spec).requests(**kw))


def check_spec_against_input(spec: JobSpec) -> None:
    """Raise what a run says when its plan does not fit its input."""
    problems = plan_problems(compile_plan(spec))
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        raise SpecError(
            f"job '{spec.name}' does not fit its input {spec.input.path} ({count}):", problems
        )


def test_requests_come_in_input_order_row_by_row(tmp_path: Path) -> None:
    requests = plan(make_spec(tmp_path, samples=2))
    assert [r.custom_id for r in requests] == ["a#0", "a#1", "b#0", "b#1", "c#0", "c#1"]
    assert [(r.row_id, r.sample) for r in requests][:2] == [("a", 0), ("a", 1)]
    assert requests[0].body["messages"][0] == {"role": "user", "content": "Review: Great mug"}


def test_a_streamed_request_asks_for_its_usage_unless_told_not_to(tmp_path: Path) -> None:
    streamed = plan(make_spec(tmp_path, {"stream": True}))[0].body
    assert streamed["stream_options"] == {"include_usage": True}
    told = plan(make_spec(tmp_path, {"stream": True, "stream_options": {"include_usage": False}}))
    assert told[0].body["stream_options"] == {"include_usage": False}
    assert "stream_options" not in plan(make_spec(tmp_path))[0].body


def test_without_an_id_column_the_row_position_is_the_id(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, input={"id_column": None, "batch_size": 2})
    assert [r.custom_id for r in plan(spec)] == ["0#0", "1#0", "2#0"]


def test_keep_holds_the_kept_columns_with_their_types(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, output={"keep_columns": ["id", "rating", "tags"]})
    assert plan(spec)[0].keep == {"id": "a", "rating": 5, "tags": ["x", "y"]}


# Every Chat Completions parameter, static and templated: (request fields, expected body fields)
PARAMETERS: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"temperature": 0.5, "top_p": 1}, {"temperature": 0.5, "top_p": 1}),
    ({"temperature": "{{ temp }}"}, {"temperature": 0.2}),
    ({"max_tokens": "{{ rating * 10 }}"}, {"max_tokens": 50}),
    (
        {"n": 2, "presence_penalty": -0.5, "frequency_penalty": 1.5},
        {"n": 2, "presence_penalty": -0.5, "frequency_penalty": 1.5},
    ),
    (
        {"stream": True, "stream_options": {"include_usage": True}},
        {"stream": True, "stream_options": {"include_usage": True}},
    ),
    ({"stop": "\n"}, {"stop": "\n"}),
    ({"stop": ["END", "{{ text }}"]}, {"stop": ["END", "Great mug"]}),
    (
        {"max_completion_tokens": 64, "reasoning_effort": "low"},
        {"max_completion_tokens": 64, "reasoning_effort": "low"},
    ),
    ({"logit_bias": {50256: -100, "1234": 5}}, {"logit_bias": {"50256": -100, "1234": 5}}),
    ({"logprobs": True, "top_logprobs": 5}, {"logprobs": True, "top_logprobs": 5}),
    ({"seed": 7, "user": "{{ id }}"}, {"seed": 7, "user": "a"}),
    ({"metadata": {"row": "{{ id }}", "job": "t"}}, {"metadata": {"row": "a", "job": "t"}}),
    (
        {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}},
        {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}},
    ),
    (
        {"service_tier": "flex", "store": False, "parallel_tool_calls": False},
        {"service_tier": "flex", "store": False, "parallel_tool_calls": False},
    ),
    (
        {"prediction": {"type": "content", "content": "{{ text }}"}},
        {"prediction": {"type": "content", "content": "Great mug"}},
    ),
    (
        {"web_search_options": {"search_context_size": "low"}},
        {"web_search_options": {"search_context_size": "low"}},
    ),
    ({"response_format": {"type": "json_object"}}, {"response_format": {"type": "json_object"}}),
    (
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "r",
                    "strict": True,
                    "schema": {
                        "type": "object",
                        "properties": {"score": {"type": "integer", "maximum": "{{ rating }}"}},
                    },
                },
            }
        },
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "r",
                    "strict": True,
                    "schema": {
                        "type": "object",
                        "properties": {"score": {"type": "integer", "maximum": 5}},
                    },
                },
            }
        },
    ),
    (
        {
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "f",
                        "parameters": {
                            "type": "object",
                            "properties": {"t": {"enum": "{{ tags }}"}},
                        },
                    },
                }
            ],
            "tool_choice": "required",
        },
        {
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "f",
                        "parameters": {"type": "object", "properties": {"t": {"enum": ["x", "y"]}}},
                    },
                }
            ],
            "tool_choice": "required",
        },
    ),
    (
        {"tool_choice": {"type": "function", "function": {"name": "f"}}},
        {"tool_choice": {"type": "function", "function": {"name": "f"}}},
    ),
    (
        {"top_k": 40, "extra": {"k": [1, "{{ rating }}"]}},
        {"top_k": 40, "extra": {"k": [1, 5]}},
    ),  # gateway extras pass
    ({"model": "{{ 'gpt-4o' if rating > 3 else 'gpt-4o-mini' }}"}, {"model": "gpt-4o"}),
]


@pytest.mark.parametrize(("fields", "expected"), PARAMETERS)
def test_every_parameter_passes_through_with_its_json_type(
    tmp_path: Path, fields: dict[str, Any], expected: dict[str, Any]
) -> None:
    body = plan(make_spec(tmp_path, fields))[0].body
    sent = orjson.loads(batch_line(plan(make_spec(tmp_path, fields))[0]))["body"]
    for key, value in expected.items():
        assert body[key] == value
        assert sent[key] == value
        assert _types(sent[key]) == _types(value)  # 1 stays 1, 1.0 stays 1.0, "1" stays "1"


def _types(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_types(v) for v in value]
    return type(value).__name__


def test_numbers_given_as_text_become_numbers(tmp_path: Path) -> None:
    spec = make_spec(
        tmp_path,
        {"temperature": "{{ vars.t }}", "max_tokens": "{{ vars.m }}", "logprobs": "{{ vars.lp }}"},
        vars={"t": "0.7", "m": "16", "lp": "true"},
    )
    body = plan(spec)[0].body
    assert (body["temperature"], body["max_tokens"], body["logprobs"]) == (0.7, 16, True)


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        (
            {"temperature": "{{ text }}"},
            "request.temperature: must be a number, got str 'Great mug'",
        ),
        ({"max_tokens": "{{ temp }}"}, "request.max_tokens: must be an integer, got float 0.2"),
        (
            {"stop": "{{ rating }}"},
            "request.stop: must be a string or a list of strings, got int 5",
        ),
        ({"tools": "{{ text }}"}, "request.tools: must be a list of tool mappings"),
        (
            {"messages": [{"role": "{{ text }}", "content": "x"}]},
            "request.messages[0].role: must be one of",
        ),
        (
            {
                "messages": [
                    USER,
                    {"role": "user", "content": "{{ rating > 3 }}", "name": "{{ tags }}"},
                ]
            },
            "request.messages[1].name: must be a string, got list",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": "{{ text }}"}]}
                ]
            },
            "request.messages[0].content[0].image_url: must be a mapping with a string url",
        ),
    ],
)
def test_templated_values_of_the_wrong_type_name_field_and_row(
    tmp_path: Path, fields: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(TemplateError) as caught:
        plan(make_spec(tmp_path, fields))
    assert fragment in str(caught.value)
    assert "(row id 'a')" in str(caught.value)


CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
    },
    {"role": "tool", "tool_call_id": "1", "content": "42"},
]


def test_messages_from_a_column_of_json_text(tmp_path: Path) -> None:
    rows = [{"id": "a", "chat": orjson.dumps(CONVERSATION).decode()}]
    requests = plan(make_spec(tmp_path, {"messages": "{{ chat }}"}, rows))
    assert requests[0].body["messages"] == CONVERSATION
    assert requests[0].est_prompt_tokens == estimate_prompt_tokens(CONVERSATION)


def test_messages_from_a_list_of_struct_column_drop_the_nulls_structs_add(tmp_path: Path) -> None:
    path = tmp_path / "chats.parquet"
    pl.DataFrame({"id": ["a"], "chat": [CONVERSATION]}).write_parquet(path)
    spec = make_spec(tmp_path, {"messages": "{{ [{'role': 'developer', 'content': 'x'}] + chat }}"})
    spec = spec.model_copy(update={"input": spec.input.model_copy(update={"path": str(path)})})
    messages = plan(spec)[0].body["messages"]
    assert messages == [{"role": "developer", "content": "x"}, *CONVERSATION]


@pytest.mark.parametrize(
    ("chat", "fragment"),
    [
        ("not json", "request.messages: text that is not JSON messages"),
        ('{"role": "user"}', "request.messages: must be a non-empty list of messages, got dict"),
        ("[]", "must be a non-empty list"),
        ('[{"role": "robot", "content": "x"}]', "request.messages[0].role: must be one of"),
        ('[{"role": "user"}]', "request.messages[0]: a user message needs content"),
        (
            '[{"role": "tool", "content": "x"}]',
            "request.messages[0]: a tool message needs tool_call_id",
        ),
        (
            '[{"role": "user", "content": {"a": 1}}]',
            "request.messages[0].content: must be a string, null or a list",
        ),
        (
            '[{"role": "user", "content": [{"text": "x"}]}]',
            "content[0]: a content part is a mapping with a string 'type'",
        ),
        (
            '[{"role": "user", "content": [{"type": "image_url", "image_url": "u"}]}]',
            "image_url: must be a mapping with a string url",
        ),
    ],
)
def test_bad_conversations_are_errors_naming_the_row(
    tmp_path: Path, chat: str, fragment: str
) -> None:
    rows = [
        {"id": "ok", "chat": '[{"role": "user", "content": "hi"}]'},
        {"id": "bad", "chat": chat},
    ]
    with pytest.raises(TemplateError) as caught:
        plan(make_spec(tmp_path, {"messages": "{{ chat }}"}, rows))
    assert fragment in str(caught.value)
    assert "(row id 'bad')" in str(caught.value)


def test_request_hash_is_canonical_and_covers_the_endpoint_but_not_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    reordered = {"temperature": 0, "messages": [{"content": "hi", "role": "user"}], "model": "m"}
    assert request_hash(body, "simulator") == request_hash(reordered, "simulator")
    assert request_hash(body, "simulator") != request_hash(body, "https://api.openai.com/v1")
    assert len(request_hash(body, "x")) == 64
    endpoint = {"base_url": "https://api.example.com/v1", "api_key_env": "EXAMPLE_KEY"}
    monkeypatch.setenv("EXAMPLE_KEY", "sk-one")
    first = plan(make_spec(tmp_path, endpoint=endpoint))
    monkeypatch.setenv("EXAMPLE_KEY", "sk-two")
    second = plan(make_spec(tmp_path, endpoint=endpoint))
    assert [r.request_hash for r in first] == [r.request_hash for r in second]
    assert first[0].request_hash == request_hash(first[0].body, "https://api.example.com/v1")


def test_prompt_estimate_counts_messages_and_tool_definitions(tmp_path: Path) -> None:
    tools = [{"type": "function", "function": {"name": "route", "parameters": {"type": "object"}}}]
    system = {"role": "system", "content": "You label reviews. Be terse."}
    request = plan(make_spec(tmp_path, {"messages": [system, USER], "tools": tools}))[0]
    expected = estimate_prompt_tokens(request.body["messages"])
    assert request.est_prompt_tokens == expected + estimate_text_tokens(
        orjson.dumps(tools).decode()
    )
    dynamic_tools = [{"type": "function", "function": {"name": "{{ id }}"}}]
    request = plan(make_spec(tmp_path, {"tools": dynamic_tools}))[0]
    extra = estimate_text_tokens(orjson.dumps(request.body["tools"]).decode())
    assert request.est_prompt_tokens == estimate_prompt_tokens(request.body["messages"]) + extra


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, DEFAULT_MAX_OUTPUT_TOKENS),
        ({"max_tokens": 16}, 16),
        ({"max_completion_tokens": 300, "max_tokens": 16}, 300),
        ({"max_tokens": 16, "n": 3}, 48),
        ({"n": 2}, 2 * DEFAULT_MAX_OUTPUT_TOKENS),
    ],
)
def test_max_output_tokens(body: dict[str, Any], expected: int) -> None:
    assert max_output_tokens(body) == expected


def test_a_fixed_seed_goes_on_every_request(tmp_path: Path) -> None:
    for seed in (1234, {"base": 1234}):
        requests = plan(make_spec(tmp_path, seed=seed, samples=2))
        assert {r.seed for r in requests} == {1234}
        assert {r.body["seed"] for r in requests} == {1234}


def test_per_row_seeds_are_stable_distinct_and_31_bit(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, seed={"base": 99, "per_row": True}, samples=3)
    first, again = plan(spec), plan(spec)
    seeds = [r.seed for r in first]
    assert seeds == [r.seed for r in again]
    assert len(set(seeds)) == len(seeds) == 9
    assert all(s is not None and 0 <= s < 2**31 for s in seeds)
    assert all(r.body["seed"] == r.seed == derive_seed(99, r.row_id, r.sample) for r in first)
    other_base = plan(make_spec(tmp_path, seed={"base": 100, "per_row": True}, samples=3))
    assert not set(seeds) & {r.seed for r in other_base}


def test_skip_happens_before_rendering(tmp_path: Path) -> None:
    rows = [
        {"id": "done", "chat": "not json"},
        {"id": "todo", "chat": '[{"role": "user", "content": "hi"}]'},
    ]
    spec = make_spec(tmp_path, {"messages": "{{ chat }}"}, rows, samples=2)
    seen: list[tuple[str, int]] = []

    def skip(row_ids: pl.Series, sample: int) -> pl.Series:
        seen.extend((row_id, sample) for row_id in row_ids)
        return (row_ids == "done") | (sample == 1)

    requests = plan(spec, skip=skip)  # the unrenderable row is never rendered
    assert [r.custom_id for r in requests] == ["todo#0"]
    assert sorted(seen) == [("done", 0), ("done", 1), ("todo", 0), ("todo", 1)]


def test_bad_input_lines_reach_on_issue_in_skip_mode(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, input={"on_bad_line": "skip"})
    Path(spec.input.path).write_text('{"id": "a", "text": "x"}\n{oops\n{"id": "b", "text": "y"}\n')
    issues: list[Any] = []
    assert [r.row_id for r in plan(spec, on_issue=issues.append)] == ["a", "b"]
    assert [(issue.line, issue.path) for issue in issues] == [(2, spec.input.path)]


row_values = st.fixed_dictionaries(
    {
        "text": st.text(max_size=40),
        "rating": st.integers(-(2**40), 2**40),
        "score": st.floats(allow_nan=False, allow_infinity=False, width=32),
        "tags": st.lists(st.text(max_size=5), max_size=3),
        "note": st.one_of(st.none(), st.text(max_size=10)),
    }
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=st.lists(row_values, min_size=1, max_size=8), samples=st.integers(1, 3))
def test_same_spec_and_data_give_byte_identical_plans(
    tmp_path: Path, rows: list[dict[str, Any]], samples: int
) -> None:
    data = [{"id": f"r{i}", **row} for i, row in enumerate(rows)]
    request = {
        "messages": [
            {"role": "system", "content": "Rate {{ rating }} {{ note }}"},
            {"role": "user", "content": [{"type": "text", "text": "{{ text }}"}]},
        ],
        "temperature": "{{ score }}",
        "metadata": {"tags": "{{ tags | join(',') }}"},
        "logit_bias": {"{{ rating }}": 1},
    }
    spec = make_spec(tmp_path, request, data, samples=samples, seed={"base": 5, "per_row": True})
    first = b"".join(batch_line(r) for r in plan(spec))
    second = b"".join(batch_line(r) for r in plan(spec))
    assert first == second
    parquet = tmp_path / "in.parquet"
    pl.read_ndjson(spec.input.path).write_parquet(parquet)
    as_parquet = spec.model_copy(
        update={"input": spec.input.model_copy(update={"path": str(parquet)})}
    )
    assert b"".join(batch_line(r) for r in plan(as_parquet)) == first
    assert first.count(b"\n") == len(data) * samples


# -- check_spec_against_input --------------------------------------------------------------------


def test_every_problem_is_listed_at_once_with_locations_and_suggestions(tmp_path: Path) -> None:
    spec = make_spec(
        tmp_path,
        {
            "messages": [
                {"role": "system", "content": "{{ vars.tone }}"},
                {"role": "user", "content": "{{ txt }} {{ ratng }}"},
            ],
            "temperature": "hot",
            "stop": "{{ text",
        },
        input={"id_column": "uid"},
        output={"keep_columns": ["id", "Text"]},
        seed=3,
    )
    spec = spec.model_copy(update={"request": {**spec.request, "seed": 1}})
    with pytest.raises(SpecError) as caught:
        check_spec_against_input(spec)
    problems = caught.value.problems
    assert f"job 'job' does not fit its input {spec.input.path} (8 problems):" in str(caught.value)
    expected = [
        "request.stop: template syntax error",
        "request.temperature: must be a number, got str 'hot'",
        "request.messages[0].content: vars.tone is not set (add it under vars: or pass --var tone=",
        "request.messages[1].content: column 'ratng' does not exist in the input (did you mean 'ra",
        "request.messages[1].content: column 'txt' does not exist in the input (did you mean 'text",
        "output.keep_columns: column 'Text' does not exist in the input (did you mean 'text'?)",
        "input.id_column: column 'uid' does not exist in the input (did you mean 'id'?)",
        "request.seed: set a seed in one place only",
    ]
    for fragment in expected:
        assert any(fragment in problem for problem in problems), fragment


def test_a_type_error_in_the_first_rows_is_found_before_the_run(tmp_path: Path) -> None:
    rows = [*ROWS, {"id": "d", "text": "x", "rating": 2, "temp": 0.1, "tags": []}]
    spec = make_spec(tmp_path, {"max_tokens": "{{ text }}"}, rows)
    with pytest.raises(SpecError) as caught:
        check_spec_against_input(spec)
    assert "request.max_tokens: must be an integer, got str 'Great mug' (row id 'a')" in str(
        caught.value
    )


def test_an_id_column_must_hold_text_or_integers(tmp_path: Path) -> None:
    rows = [{"id": 1.5, "text": "x"}, {"id": 2.5, "text": "y"}]
    with pytest.raises(SpecError, match=r"input.id_column: column 'id' is f64|Float64"):
        check_spec_against_input(make_spec(tmp_path, rows=rows))


def test_a_binary_column_used_as_text_is_a_spec_error(tmp_path: Path) -> None:
    path = tmp_path / "blobs.parquet"
    pl.DataFrame({"id": ["a"], "blob": [b"hello"]}).write_parquet(path)
    spec = load_spec(
        {
            "input": {"path": str(path), "id_column": "id"},
            "request": {"model": "m", "messages": [{"role": "user", "content": "{{ blob }}"}]},
        }
    )
    with pytest.raises(SpecError, match="column 'blob' holds raw bytes"):
        check_spec_against_input(spec)


def test_a_good_spec_passes(tmp_path: Path) -> None:
    check_spec_against_input(make_spec(tmp_path, {"temperature": "{{ temp }}"}))


def test_planning_refuses_a_request_that_is_wrong_before_any_row(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, {"temperature": "hot", "stop": "{{ text"})
    with pytest.raises(SpecError) as caught:
        plan(spec)
    assert "request.stop: template syntax error" in str(caught.value)
    assert "request.temperature: must be a number, got str 'hot'" in str(caught.value)


# -- conversations spliced from columns -----------------------------------------------------------

SYSTEM = {"role": "system", "content": "You are a support agent."}
QUESTION = {"role": "user", "content": "{{ question }}"}
HISTORY = [
    {"role": "user", "content": "Where is my order?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "track", "arguments": "{}"}}
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "in transit"},
    {"role": "assistant", "content": "It is on its way."},
]


def parquet_spec(tmp_path: Path, frame: pl.DataFrame, request: dict[str, Any]) -> JobSpec:
    path = tmp_path / "rows.parquet"
    frame.write_parquet(path)
    spec = make_spec(tmp_path, request)
    return spec.model_copy(update={"input": spec.input.model_copy(update={"path": str(path)})})


def test_a_history_column_is_spliced_between_spec_messages(tmp_path: Path) -> None:
    frame = pl.DataFrame({"id": ["a"], "history": [HISTORY], "question": ["And now?"]})
    assert frame.schema["history"] == pl.List  # a list-of-struct column: the union of keys
    spec = parquet_spec(tmp_path, frame, {"messages": [SYSTEM, "{{ history }}", QUESTION]})
    (request,) = plan(spec)
    expected = [SYSTEM, *HISTORY, {"role": "user", "content": "And now?"}]
    assert request.body["messages"] == expected  # tool_call_id: null etc. are gone, not null
    sent = orjson.loads(batch_line(request))["body"]["messages"]
    assert all(None not in m.values() for m in sent if m["role"] != "assistant")
    assert request.est_prompt_tokens == estimate_prompt_tokens(expected)


@pytest.mark.parametrize(
    ("history", "spliced"),
    [
        (orjson.dumps(HISTORY[:1]).decode(), HISTORY[:1]),  # JSON text of a list
        ('{"role": "assistant", "content": "Hi!"}', [{"role": "assistant", "content": "Hi!"}]),
        (None, []),  # no history yet: nothing spliced
        ("[]", []),
    ],
)
def test_a_splice_takes_json_text_one_message_or_nothing(
    tmp_path: Path, history: str | None, spliced: list[dict[str, Any]]
) -> None:
    rows = [{"id": "a", "history": history, "question": "Q"}]
    spec = make_spec(tmp_path, {"messages": [SYSTEM, "{{ history }}", QUESTION]}, rows)
    (request,) = plan(spec)
    assert request.body["messages"] == [SYSTEM, *spliced, {"role": "user", "content": "Q"}]


def test_a_struct_column_holding_one_message_is_inserted_as_one(tmp_path: Path) -> None:
    frame = pl.DataFrame({"id": ["a", "b"], "turn": [HISTORY[2], HISTORY[3]], "question": "Q"})
    assert frame.schema["turn"] == pl.Struct  # the union of keys: b gets tool_call_id null
    spec = parquet_spec(tmp_path, frame, {"messages": [SYSTEM, "{{ turn }}", QUESTION]})
    first, second = (r.body["messages"] for r in plan(spec))
    assert first == [SYSTEM, HISTORY[2], {"role": "user", "content": "Q"}]
    assert second[1] == HISTORY[3]


def test_several_splices_and_the_whole_list_form_agree(tmp_path: Path) -> None:
    rows = [{"id": "a", "older": orjson.dumps(HISTORY[:2]).decode(), "recent": HISTORY[2:]}]
    spliced = make_spec(tmp_path, {"messages": ["{{ older }}", "{{ recent }}"]}, rows)
    whole = make_spec(tmp_path, {"messages": "{{ (older | from_json) + recent }}"}, rows)
    assert plan(spliced)[0].body["messages"] == HISTORY
    with pytest.raises(SpecError, match="from_json"):  # no such filter: the whole form needs JSON
        plan(whole)


@pytest.mark.parametrize(
    ("history", "fragment"),
    [
        ("not json", "request.messages[1] ← history: text that is not JSON messages"),
        ("5", "request.messages[1] ← history: a splice needs a list of messages"),
        ('[{"role": "robot", "content": "x"}]', "request.messages[1] ← history[0].role: must be"),
        ('[{"role": "user", "content": null}]', "← history[0]: a user message needs content"),
        ('[{"role": "tool", "content": "x"}]', "← history[0]: a tool message needs tool_call_id"),
        ('[{"role": "assistant"}]', "← history[0]: an assistant message needs content or tool"),
        ('[{"role": "user", "content": 3}]', "← history[0].content: must be a string, null"),
        ('[{"role": "user", "content": []}]', "← history[0].content: an empty list of parts"),
        ('["hi"]', "← history[0]: a message is a mapping with role and content, got str 'hi'"),
    ],
)
def test_bad_spliced_messages_name_the_column_the_message_and_the_row(
    tmp_path: Path, history: str, fragment: str
) -> None:
    rows = [
        {"id": "ok", "history": '[{"role": "user", "content": "hi"}]', "question": "Q"},
        {"id": "bad", "history": history, "question": "Q"},
    ]
    spec = make_spec(tmp_path, {"messages": [SYSTEM, "{{ history }}", QUESTION]}, rows)
    with pytest.raises(TemplateError) as caught:
        plan(spec)
    assert fragment in str(caught.value)
    assert "(row id 'bad')" in str(caught.value)
    with pytest.raises(SpecError) as checked:  # and the check before a run finds it too
        check_spec_against_input(spec)
    assert fragment in str(checked.value)


def test_a_row_left_without_any_message_is_an_error(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, {"messages": ["{{ history }}"]}, [{"id": "a", "history": None}])
    with pytest.raises(TemplateError, match=r"no message to send.*\(row id 'a'\)"):
        plan(spec)


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        ("plain text", "request.messages[1]: a message is a mapping with role and content, or a"),
        (42, "request.messages[1]: a message is a mapping with role and content, or a"),
        ("{{ history ", "request.messages[1]: template syntax error"),
    ],
)
def test_a_message_item_that_is_neither_a_mapping_nor_a_template_is_a_spec_error(
    tmp_path: Path, item: Any, fragment: str
) -> None:
    spec = make_spec(tmp_path, {"messages": [SYSTEM, item]})
    with pytest.raises(SpecError) as caught:
        plan(spec)
    assert fragment in str(caught.value)


def test_a_splice_reads_its_column_so_a_missing_one_is_found_up_front(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, {"messages": [SYSTEM, "{{ histroy }}", USER]})
    with pytest.raises(SpecError, match=r"request.messages\[1\]: column 'histroy' does not exist"):
        check_spec_against_input(spec)


def test_a_tool_result_column_feeds_a_tool_message_as_json_text(tmp_path: Path) -> None:
    result = {"status": "in transit", "eta_days": 2, "stops": ["Lyon", "Paris"]}
    frame = pl.DataFrame(
        {"id": ["a"], "call_id": ["c1"], "result": [result], "items": [[1, 2]], "question": "Q"}
    )
    call = {
        "id": "{{ call_id }}",
        "type": "function",
        "function": {"name": "track", "arguments": "{{ result }}"},
    }
    request = {
        "messages": [
            SYSTEM,
            QUESTION,
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "{{ call_id }}", "content": "{{ result }}"},
            {"role": "tool", "tool_call_id": "c2", "content": "Items: {{ items }}"},
        ]
    }
    messages = plan(parquet_spec(tmp_path, frame, request))[0].body["messages"]
    assert messages[3] == {
        "role": "tool",
        "tool_call_id": "c1",
        "content": orjson.dumps(result).decode(),
    }
    assert orjson.loads(messages[3]["content"]) == result  # JSON, not a Python repr
    assert messages[2]["tool_calls"][0]["function"]["arguments"] == orjson.dumps(result).decode()
    assert messages[4]["content"] == "Items: [1,2]"


def test_a_column_of_image_lists_becomes_image_parts(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(b"\x89PNG-a")
    url = "https://example.com/c.png"
    rows = [
        {"id": "two", "images": ["a.png", url], "q": "Compare"},
        {"id": "none", "images": None, "q": "Nothing"},
    ]
    content = [{"type": "text", "text": "{{ q }}"}, "{{ images | image_parts('low', 'img') }}"]
    spec = make_spec(tmp_path, {"messages": [{"role": "user", "content": content}]}, rows)
    two, none = (r.body["messages"][0]["content"] for r in plan(spec))
    assert [p["type"] for p in two] == ["text", "image_url", "image_url"]
    png = "data:image/png;base64," + base64.b64encode(b"\x89PNG-a").decode()
    assert two[1]["image_url"] == {"url": png, "detail": "low"}
    assert two[2]["image_url"] == {"url": url, "detail": "low"}
    assert none == [{"type": "text", "text": "Nothing"}]


def test_image_parts_alone_make_the_content(tmp_path: Path) -> None:
    rows = [
        {"id": "a", "images": ["https://x/1.png", "https://x/2.png"]},
        {"id": "b", "images": []},
    ]
    spec = make_spec(
        tmp_path, {"messages": [{"role": "user", "content": "{{ images | image_parts }}"}]}, rows
    )
    with pytest.raises(TemplateError, match=r"content: an empty list of parts .*\(row id 'b'\)"):
        plan(spec)
    first = plan(spec, skip=lambda row_ids, sample: row_ids == "b")[0]
    assert first.body["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": "https://x/1.png"}},
        {"type": "image_url", "image_url": {"url": "https://x/2.png"}},
    ]
    assert first.est_prompt_tokens == estimate_prompt_tokens(first.body["messages"])


# -- the label set in templates --------------------------------------------------------------

LABEL_PROMPT = (
    "{% for label, meaning in labels.items() %}{{ label }}={{ meaning }};{% endfor %}"
    " Answer with one of: {{ labels | join(', ') }}"
)


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (
            {"spam": "ads", "ham": "the rest"},
            "spam=ads;ham=the rest; Answer with one of: spam, ham",
        ),
        (["yes", "no"], "yes=;no=; Answer with one of: yes, no"),
    ],
)
def test_a_labeling_job_renders_its_label_set_into_the_prompt(
    tmp_path: Path, labels: Any, expected: str
) -> None:
    system = {"role": "system", "content": LABEL_PROMPT}
    rows = [{"id": "a", "text": "x", "labels": "gold"}]  # a column of the same name...
    user = {"role": "user", "content": "{{ text }} {{ row.labels }}"}  # ...stays reachable
    spec = make_spec(tmp_path, {"messages": [system, user]}, rows, output={"labels": labels})
    check_spec_against_input(spec)
    (request,) = plan(spec)
    assert request.body["messages"] == [
        {"role": "system", "content": expected},
        {"role": "user", "content": "x gold"},
    ]


def test_labels_is_a_column_again_when_the_job_has_no_label_set(tmp_path: Path) -> None:
    rows = [{"id": "a", "labels": "gold"}]
    spec = make_spec(tmp_path, {"messages": [{"role": "user", "content": "{{ labels }}"}]}, rows)
    assert plan(spec)[0].body["messages"][0]["content"] == "gold"
    spec = make_spec(tmp_path, {"messages": [{"role": "user", "content": "{{ labels }}"}]})
    with pytest.raises(SpecError, match="column 'labels' does not exist"):
        check_spec_against_input(spec)


def test_a_column_of_parts_is_sent_without_the_nulls_of_its_struct(tmp_path: Path) -> None:
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://x/1.png", "detail": "low"}},
    ]
    frame = pl.DataFrame({"id": ["a"], "parts": [parts]})  # the text part gets image_url: null
    spec = parquet_spec(tmp_path, frame, {"messages": [{"role": "user", "content": "{{ parts }}"}]})
    assert plan(spec)[0].body["messages"] == [{"role": "user", "content": parts}]


def test_messages_given_as_plain_text_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"request.messages: must be a list of messages, or a"):
        plan(make_spec(tmp_path, {"messages": "hello"}))


def test_templates_that_read_no_column_give_one_request_per_row(tmp_path: Path) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(f'{{"id": "r{i}", "text": "x"}}\n' for i in range(5)))
    spec = load_spec(
        {
            "input": {"path": str(data), "id_column": "id"},
            "endpoint": {"base_url": "simulator"},
            "request": {"model": "m", "messages": [{"role": "user", "content": "Say hi"}]},
        }
    )
    requests = list(compile_plan(spec).requests())
    assert [r.row_id for r in requests] == [f"r{i}" for i in range(5)]
    assert all(r.body["messages"] == [{"role": "user", "content": "Say hi"}] for r in requests)


def test_the_tokenizer_counts_every_prompt_text(tmp_path: Path) -> None:
    # the estimate by default; a job asking for tiktoken without it gets a spec problem
    rows = [{"id": "a", "text": "one two three", "tool": "lookup"}]
    spec = make_spec(
        tmp_path,
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "{{ text }}"},
            ],
            "tools": [{"type": "function", "function": {"name": "lookup"}}],
        },
        rows,
    )
    request = plan(spec)[0]
    tools = estimate_text_tokens(orjson.dumps(request.body["tools"]).decode())
    assert request.est_prompt_tokens == estimate_prompt_tokens(request.body["messages"]) + tools
    # a counter sees every text: two messages of one text each, plus the chat format's share
    counted = estimate_prompt_tokens(request.body["messages"], counter=lambda text: 1000)
    assert counted == REPLY_PRIMING_TOKENS + 2 * (PER_MESSAGE_TOKENS + 1000)
    assert text_counter("estimate") is estimate_text_tokens
    exact = spec.model_copy(
        update={"limits": spec.limits.model_copy(update={"tokenizer": "tiktoken"})}
    )
    with pytest.raises(SpecError, match=r"limits\.tokenizer: tiktoken is not installed"):
        check_spec_against_input(exact)


# -- request keys that are not Chat Completions parameters ---------------------------------------


def test_a_near_miss_of_a_parameter_is_a_typo(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, {"max_token": 5})
    with pytest.raises(SpecError) as caught:
        check_spec_against_input(spec)
    assert (
        "request.max_token: not a Chat Completions parameter (did you mean 'max_tokens'?)"
        in str(caught.value)
    )


def test_a_servers_own_parameter_is_sent_with_a_warning(tmp_path: Path) -> None:
    compiled = compile_plan(make_spec(tmp_path, {"top_k": 40}))
    assert [w.split(":")[0] for w in compiled.request.warnings] == ["request.top_k"]
    assert "extra_body" in compiled.request.warnings[0]
    assert all(r.body["top_k"] == 40 for r in plan(make_spec(tmp_path, {"top_k": 40})))


def test_extra_body_is_merged_into_the_body_without_a_warning(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, {"extra_body": {"top_k": "{{ rating }}", "min_p": 0.1}})
    assert compile_plan(spec).request.warnings == ()
    requests = plan(spec)
    assert [r.body["top_k"] for r in requests] == [5, 1, 3]  # a whole value keeps its type
    assert all("extra_body" not in r.body and r.body["min_p"] == 0.1 for r in requests)


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"temperature": 0.5}, "request.extra_body.temperature: a Chat Completions parameter"),
        ("top_k=4", "request.extra_body: must be a mapping"),
    ],
)
def test_extra_body_that_would_be_ambiguous_is_a_problem(
    tmp_path: Path, extra: Any, fragment: str
) -> None:
    with pytest.raises(SpecError) as caught:
        check_spec_against_input(make_spec(tmp_path, {"extra_body": extra}))
    assert fragment in str(caught.value)


def test_a_null_cell_as_a_whole_message_is_that_rows_error_not_an_empty_turn(
    tmp_path: Path,
) -> None:
    rows = [
        {"id": "ok", "question": "2+2?", "answer": "4"},
        {"id": "gap", "question": "3+3?", "answer": None},
    ]
    messages = [
        {"role": "user", "content": "{{ question }}"},
        {"role": "assistant", "content": "{{ answer }}"},
        {"role": "user", "content": "Sure?"},
    ]
    with pytest.raises(TemplateError) as caught:
        plan(make_spec(tmp_path, {"messages": messages}, rows))
    assert "request.messages[1]: an assistant message needs content" in str(caught.value)
    assert "(row id 'gap')" in str(caught.value)
