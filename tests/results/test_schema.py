"""The result columns: their types, their values, and that they survive Parquet unchanged."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchchat.errors import SinkError, SpecError
from batchchat.models import ChatResult, ToolCall
from batchchat.results.columns import ColumnGroup
from batchchat.results.encoder import ResultEncoder
from batchchat.results.schema import result_columns
from tests._results import (
    T0,
    T1,
    client_error,
    logprobs_of,
    make_choice,
    make_result,
    make_spec,
    server_error,
)

#: the column contract: name → polars type as read back
CONTRACT: dict[str, Any] = {
    "row_id": pl.String,
    "sample": pl.Int64,
    "request_hash": pl.String,
    "row_index": pl.Int64,
    "status": pl.String,
    "error_type": pl.String,
    "error_message": pl.String,
    "http_status": pl.Int64,
    "attempts": pl.Int64,
    "latency_ms": pl.Float64,
    "started_at": pl.Datetime("us", "UTC"),
    "finished_at": pl.Datetime("us", "UTC"),
    "run_id": pl.String,
    "batch_id": pl.String,
    "response_id": pl.String,
    "model": pl.String,
    "system_fingerprint": pl.String,
    "seed": pl.Int64,
    "content": pl.String,
    "reasoning_content": pl.String,
    "refusal": pl.String,
    "finish_reason": pl.String,
    "tool_calls": pl.List(
        pl.Struct(
            {
                "id": pl.String,
                "type": pl.String,
                "function": pl.Struct({"name": pl.String, "arguments": pl.String}),
            }
        )
    ),
    "logprobs": pl.List(
        pl.Struct(
            {
                "token": pl.String,
                "logprob": pl.Float64,
                "bytes": pl.List(pl.Int64),
                "top_logprobs": pl.List(
                    pl.Struct(
                        {"token": pl.String, "logprob": pl.Float64, "bytes": pl.List(pl.Int64)}
                    )
                ),
            }
        )
    ),
    "prompt_tokens": pl.Int64,
    "completion_tokens": pl.Int64,
    "total_tokens": pl.Int64,
    "cached_tokens": pl.Int64,
    "reasoning_tokens": pl.Int64,
    "cost_usd": pl.Float64,
    "reasks": pl.Int64,
    "ask_costs_usd": pl.List(pl.Float64),
    "cached": pl.Boolean,
    "cost_saved_usd": pl.Float64,
}


def round_trip(
    tmp_path: Path, spec: Any, results: Sequence[ChatResult], input_schema: Any = None, **kw: Any
) -> pl.DataFrame:
    columns = result_columns(spec, input_schema or {}, **kw)
    schema = columns.schema
    encoder = ResultEncoder(columns, run_id="run-1")
    for result in results:
        encoder.add(result)
    table = encoder.take_table()
    assert table.schema.equals(schema)
    path = tmp_path / "part.parquet"
    pq.write_table(table, path)
    assert pq.read_schema(path).equals(schema, check_metadata=False)
    return pl.read_parquet(path)


def test_every_column_has_its_contract_type(tmp_path: Path) -> None:
    frame = round_trip(
        tmp_path, make_spec(), [make_result("1"), make_result("2", error=client_error())]
    )
    assert dict(frame.schema) == CONTRACT
    assert list(frame.columns) == list(CONTRACT)  # identity, outcome, batch, response, usage, asks


def test_ok_row_values(tmp_path: Path) -> None:
    result = make_result("r1", 2, content="Paris", seed=7, cost_usd=0.0012)
    row = round_trip(tmp_path, make_spec(), [result]).row(0, named=True)
    assert row["row_id"] == "r1" and row["sample"] == 2 and row["request_hash"] == "hash-r1-2"
    assert (row["status"], row["error_type"], row["error_message"]) == ("ok", None, None)
    assert (row["http_status"], row["attempts"], row["latency_ms"]) == (200, 1, 12.5)
    assert (row["started_at"], row["finished_at"]) == (T0, T1)
    assert row["run_id"] == "run-1"
    assert row["response_id"] == "chatcmpl-r1" and row["model"] == "gpt-test-2025"
    assert row["system_fingerprint"] == "fp_1" and row["seed"] == 7
    assert row["content"] == "Paris" and row["finish_reason"] == "stop"
    assert row["tool_calls"] is None and row["logprobs"] is None
    usage = [row[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")]
    assert usage == [10, 5, 15]
    assert (row["cached_tokens"], row["reasoning_tokens"], row["cost_usd"]) == (2, 1, 0.0012)


def test_error_row_keeps_the_final_error_and_the_seed_sent(tmp_path: Path) -> None:
    result = make_result("r1", error=server_error("upstream overloaded"), attempts=3, seed=5)
    row = round_trip(tmp_path, make_spec(), [result]).row(0, named=True)
    assert row["status"] == "error"
    assert row["error_type"] == "ServerError"  # the last error, not RetriesExhausted
    assert "upstream overloaded" in row["error_message"]
    assert row["http_status"] == 503 and row["attempts"] == 3 and row["seed"] == 5
    assert row["content"] is None and row["prompt_tokens"] is None


@pytest.mark.parametrize(
    ("message", "leaked"),
    [
        ("401: Incorrect API key provided: sk-proj-abcdefghijklmnop1234", "abcdefghijklmnop1234"),
        ("sent header Authorization: Bearer abcdef0123456789xyz", "abcdef0123456789xyz"),
        ('body {"api_key": "k3y-v4lue-0123456789"}', "k3y-v4lue-0123456789"),
    ],
)
def test_error_messages_never_carry_keys(tmp_path: Path, message: str, leaked: str) -> None:
    result = make_result("r1", error=client_error(message))
    row = round_trip(tmp_path, make_spec(), [result]).row(0, named=True)
    assert leaked not in row["error_message"]
    assert "***" in row["error_message"]


def test_tool_calls_and_logprobs_round_trip(tmp_path: Path) -> None:
    calls = [
        ToolCall("call_1", "function", "get_weather", '{"city": "Oslo"}'),
        ToolCall("call_2", "function", "get_time", "{}"),
    ]
    choice = make_choice(
        None, tool_calls=calls, logprobs=logprobs_of("Hi", "é"), finish_reason="tool_calls"
    )
    row = round_trip(tmp_path, make_spec(), [make_result("1", choices=[choice])]).row(0, named=True)
    assert row["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
        },
        {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
    ]
    first, second = row["logprobs"]
    assert first == {
        "token": "Hi",
        "logprob": -0.25,
        "bytes": [72, 105],
        "top_logprobs": [
            {"token": "Hi", "logprob": -0.25, "bytes": [72, 105]},
            {"token": "x", "logprob": -3.0, "bytes": None},
        ],
    }
    assert second["bytes"] == [195, 169] and second["logprob"] == -0.5


def test_n_greater_than_one_keeps_every_choice(tmp_path: Path) -> None:
    spec = make_spec(request={"n": 3})
    choices = [
        make_choice("a", index=0, logprobs=logprobs_of("a")),
        make_choice("b", index=1, tool_calls=[ToolCall("c", "function", "f", "{}")]),
        make_choice(None, index=2, refusal="no", finish_reason="content_filter"),
    ]
    frame = round_trip(
        tmp_path, spec, [make_result("1", choices=choices), make_result("2", error=client_error())]
    )
    ok, failed = frame.rows(named=True)
    assert ok["content"] == "a"  # top-level columns describe choice 0
    assert [c["index"] for c in ok["choices"]] == [0, 1, 2]
    assert [c["content"] for c in ok["choices"]] == ["a", "b", None]
    assert ok["choices"][1]["tool_calls"][0]["function"]["name"] == "f"
    assert ok["choices"][0]["logprobs"][0]["token"] == "a"
    assert ok["choices"][2]["refusal"] == "no"
    assert ok["choices"][2]["finish_reason"] == "content_filter"
    assert failed["choices"] is None
    assert frame.schema["choices"] == pl.List(pl.Struct({
        "index": pl.Int64, "content": pl.String, "reasoning_content": pl.String,
        "refusal": pl.String, "finish_reason": pl.String,
        "tool_calls": CONTRACT["tool_calls"], "logprobs": CONTRACT["logprobs"],
    }))  # fmt: skip


def test_choices_column_only_when_n_asks_for_more() -> None:
    assert "choices" not in result_columns(make_spec(), {}).schema.names
    assert "choices" not in result_columns(make_spec(request={"n": 1}), {}).schema.names
    assert "choices" in result_columns(make_spec(request={"n": 2}), {}).schema.names


def test_keep_columns_keep_their_input_types(tmp_path: Path) -> None:
    input_schema = {
        "id": pl.Int32,
        "text": pl.String,
        "day": pl.Date,
        "at": pl.Datetime("ms", "Europe/Oslo"),
        "price": pl.Decimal(10, 2),
        "tags": pl.List(pl.String),
        "meta": pl.Struct({"lang": pl.String, "score": pl.Float32}),
        "kind": pl.Categorical(),
        "flag": pl.Boolean,
    }
    spec = make_spec(output={"keep_columns": list(input_schema)})
    at = datetime.fromisoformat("2025-01-02T03:04:05.006+01:00")
    keep = {
        "id": 7,
        "text": "héllo",
        "day": date(2025, 1, 2),
        "at": at,
        "price": Decimal("12.30"),
        "tags": ["a", "b"],
        "meta": {"lang": "en", "score": 0.5},
        "kind": "news",
        "flag": True,
    }
    frame = round_trip(
        tmp_path, spec, [make_result("1", keep=keep), make_result("2", keep={})], input_schema
    )
    assert frame.columns[:2] == ["row_id", "sample"]
    assert frame.columns[2 : 2 + len(input_schema)] == list(input_schema)
    for name, dtype in input_schema.items():
        expected = pl.String if name == "kind" else dtype  # categories are stored as text
        assert frame.schema[name] == expected, name
    row = frame.row(0, named=True)
    assert {name: row[name] for name in keep} == keep
    assert all(frame.row(1, named=True)[name] is None for name in keep)


def test_keep_column_problems_are_spec_errors() -> None:
    with pytest.raises(SpecError, match=r"keep_columns: the input has no column 'nope' \(text\)"):
        result_columns(make_spec(output={"keep_columns": ["nope"]}), {"text": pl.String})
    with pytest.raises(SpecError, match="'content' is also the name of a result column"):
        result_columns(make_spec(output={"keep_columns": ["content"]}), {"content": pl.String})


def test_a_value_that_does_not_fit_names_its_column_and_row() -> None:
    spec = make_spec(output={"keep_columns": ["n"]})
    encoder = ResultEncoder(result_columns(spec, {"n": pl.Int64}))
    encoder.add(make_result("ok-row", keep={"n": 1}))
    encoder.add(make_result("bad-row", keep={"n": "seven"}))
    with pytest.raises(
        SinkError, match=r"column 'n' \(int64\) cannot hold the value 'seven' of row 'bad-row'"
    ):
        encoder.take_table()


def test_all_null_columns_keep_their_types(tmp_path: Path) -> None:
    spec = make_spec(request={"n": 2}, output={"parse": "json"})
    schema = result_columns(spec, {}).schema
    encoder = ResultEncoder(result_columns(spec, {}))
    encoder.add(make_result("1", error=client_error()))  # every response column null
    first = encoder.take_table()
    encoder.add(make_result("2", choices=[make_choice('{"a": 1}', logprobs=logprobs_of("x"))]))
    second = encoder.take_table()
    assert first.schema.equals(second.schema) and first.schema.equals(schema)
    for i, table in enumerate((first, second)):
        pq.write_table(table, tmp_path / f"part-{i}.parquet")
    both = pl.read_parquet(tmp_path / "*.parquet")
    assert both.height == 2 and both.schema["logprobs"] == CONTRACT["logprobs"]


def test_take_table_clears_the_buffer() -> None:
    spec = make_spec()
    encoder = ResultEncoder(result_columns(spec, {}))
    encoder.add(make_result("1"))
    encoder.add(make_result("2"))
    assert len(encoder) == 2
    assert encoder.take_table().num_rows == 2
    assert len(encoder) == 0 and encoder.take_table().num_rows == 0


def test_raw_response_is_kept_when_asked(tmp_path: Path) -> None:
    raw = '{"id": "chatcmpl-1", "object": "chat.completion", "extra": {"x": 1}}'
    frame = round_trip(tmp_path, make_spec(output={"keep_raw": True}), [make_result("1", raw=raw)])
    assert frame.columns[-1] == "raw_response" and frame.item(0, "raw_response") == raw
    assert "raw_response" not in result_columns(make_spec(), {}).schema.names


# -- structured output --------------------------------------------------------------------------

REVIEW_SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "score": {"type": "number"},
        "stars": {"type": "integer"},
        "topics": {"type": "array", "items": {"type": "string"}},
        "author": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "verified": {"type": "boolean"}},
            "required": ["name"],
        },
        "quotes": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"text": {"type": "string"}, "line": {"type": ["integer", "null"]}},
                "required": ["text", "line"],
            },
        },
    },
    "required": ["sentiment", "score"],
}


def schema_spec(schema: Any = REVIEW_SCHEMA) -> Any:
    response_format = {"type": "json_schema", "json_schema": {"name": "review", "schema": schema}}
    return make_spec(request={"response_format": response_format}, output={"parse": "json"})


def test_parsed_is_typed_from_the_response_format(tmp_path: Path) -> None:
    content = (
        '{"sentiment": "positive", "score": 4, "stars": 5, "topics": ["food", "price"],'
        ' "author": {"name": "Ada", "verified": true},'
        ' "quotes": [{"text": "great", "line": 3}, {"text": "ok", "line": null}]}'
    )
    frame = round_trip(tmp_path, schema_spec(), [make_result("1", content=content)])
    assert frame.schema["parsed"] == pl.Struct({
        "sentiment": pl.String, "score": pl.Float64, "stars": pl.Int64,
        "topics": pl.List(pl.String),
        "author": pl.Struct({"name": pl.String, "verified": pl.Boolean}),
        "quotes": pl.List(pl.Struct({"text": pl.String, "line": pl.Int64})),
    })  # fmt: skip
    assert frame.item(0, "parse_error") is None
    assert frame.item(0, "parsed") == {
        "sentiment": "positive",
        "score": 4.0,
        "stars": 5,
        "topics": ["food", "price"],
        "author": {"name": "Ada", "verified": True},
        "quotes": [{"text": "great", "line": 3}, {"text": "ok", "line": None}],
    }
    unnested = frame.select(pl.col("parsed").struct.field("sentiment", "score"))
    assert unnested.row(0) == ("positive", 4.0)


def test_missing_optional_fields_are_null(tmp_path: Path) -> None:
    frame = round_trip(
        tmp_path,
        schema_spec(),
        [make_result("1", content='{"sentiment": "neutral", "score": 0.5}')],
    )
    parsed = frame.item(0, "parsed")
    assert parsed["sentiment"] == "neutral"
    assert parsed["stars"] is None and parsed["topics"] is None and parsed["author"] is None


def test_required_fields_are_not_nullable_in_the_arrow_type() -> None:
    parsed = result_columns(schema_spec(), {}).schema.field("parsed").type
    nullable = {field.name: field.nullable for field in parsed}
    assert nullable["sentiment"] is False and nullable["score"] is False
    assert nullable["stars"] is True and nullable["author"] is True
    quote = parsed.field("quotes").type.value_type
    assert quote.field("text").nullable is False and quote.field("line").nullable is True


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ('{"sentiment": "positive", "score": ', "content is not valid JSON"),
        ("Sure! Here it is.", "content is not valid JSON"),
        (
            '{"sentiment": "meh", "score": 1}',
            "does not match the schema at $.sentiment: 'meh' is not one of",
        ),
        ('{"sentiment": "positive"}', "'score' is a required property"),
        (
            '{"sentiment": "positive", "score": "high"}',
            "at $.score: 'high' is not of type 'number'",
        ),
        (
            '{"sentiment": "positive", "score": 1, "stars": 4.5}',
            "at $.stars: 4.5 is not of type 'integer'",
        ),
        ("", "the response has no content to parse"),
    ],
)
def test_parse_errors_say_why(tmp_path: Path, content: str, error: str) -> None:
    frame = round_trip(tmp_path, schema_spec(), [make_result("1", content=content)])
    assert frame.item(0, "parsed") is None
    assert error in frame.item(0, "parse_error")
    assert frame.item(0, "status") == "ok"  # the request succeeded; only its content is off


def test_a_refusal_has_nothing_to_parse(tmp_path: Path) -> None:
    choice = make_choice(None, refusal="I can't help with that.")
    frame = round_trip(tmp_path, schema_spec(), [make_result("1", choices=[choice])])
    assert frame.item(0, "parse_error") == "the response has no content to parse"
    assert frame.item(0, "refusal") == "I can't help with that."


def test_failed_requests_have_no_parse_error(tmp_path: Path) -> None:
    frame = round_trip(tmp_path, schema_spec(), [make_result("1", error=server_error())])
    assert frame.row(0, named=True)["parsed"] is None
    assert frame.row(0, named=True)["parse_error"] is None


def test_a_code_fence_around_the_json_is_tolerated(tmp_path: Path) -> None:
    content = '```json\n{"sentiment": "negative", "score": -1}\n```'
    frame = round_trip(tmp_path, schema_spec(), [make_result("1", content=content)])
    assert frame.item(0, "parsed")["sentiment"] == "negative"


def test_without_a_schema_parsed_is_compact_json_text(tmp_path: Path) -> None:
    spec = make_spec(request={"response_format": {"type": "json_object"}}, output={"parse": "json"})
    frame = round_trip(
        tmp_path,
        spec,
        [make_result("1", content='{ "a": [1, 2] }'), make_result("2", content="{oops")],
    )
    assert frame.schema["parsed"] == pl.String
    assert frame.item(0, "parsed") == '{"a":[1,2]}'
    assert frame.select(pl.col("parsed").str.json_decode(pl.Struct({"a": pl.List(pl.Int64)}))).item(
        0, 0
    ) == {"a": [1, 2]}
    assert frame.item(1, "parsed") is None and "not valid JSON" in frame.item(1, "parse_error")


def test_an_invalid_json_schema_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="is not a valid JSON Schema"):
        result_columns(schema_spec({"type": "object", "properties": {"a": {"type": "strnig"}}}), {})


# -- composability ------------------------------------------------------------------------------


def label_group() -> ColumnGroup:
    def extract(result: ChatResult) -> tuple[Any, ...]:
        content = result.response.choices[0].content if result.response else None
        label = content.strip().lower() if content else None
        return (label, None if label in {"yes", "no"} else "no label matched")

    fields = (pa.field("label", pa.string()), pa.field("label_error", pa.string()))
    return ColumnGroup("labels", fields, extract)


def test_another_module_can_add_a_column_group(tmp_path: Path) -> None:
    spec = make_spec()
    frame = round_trip(
        tmp_path, spec, [make_result("1", content=" Yes"), make_result("2", content="maybe")],
        extra_groups=[label_group()],
    )  # fmt: skip
    assert frame.columns[-2:] == ["label", "label_error"]
    assert frame["label"].to_list() == ["yes", "maybe"]
    assert frame["label_error"].to_list() == [None, "no label matched"]


def test_json_cut_off_by_max_tokens_says_so(tmp_path: Path) -> None:
    choice = make_choice('{"sentiment": "positive", "sco', finish_reason="length")
    frame = round_trip(tmp_path, schema_spec(), [make_result("1", choices=[choice])])
    error = frame.item(0, "parse_error")
    assert error.startswith("the answer was cut off at max_tokens (finish_reason length): ")
    assert "content is not valid JSON" in error
