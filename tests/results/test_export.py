"""Export formats, read back: JSON Lines, OpenAI Batch API output lines, CSV."""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest

from batchchat.errors import NetworkError, RetriesExhausted
from batchchat.models import ToolCall, Usage
from batchchat.results.export import export_results, export_to_file
from batchchat.results.ledger import read_results
from batchchat.results.outdir import open_output
from batchchat.spec import JobSpec
from tests._results import (
    client_error,
    logprobs_of,
    make_choice,
    make_result,
    make_spec,
    server_error,
    write_parts,
)


def fill(out: Path, spec: JobSpec | None = None, **kw: Any) -> JobSpec:
    """An output directory with an ok row, a retried row, an HTTP error and a network error."""
    spec = spec or make_spec(output={"keep_columns": ["day"]})
    calls = [ToolCall("call_1", "function", "lookup", '{"q": 1}')]
    results = [
        make_result(
            "a",
            choices=[make_choice("Paris", logprobs=logprobs_of("Par", "is"), tool_calls=calls)],
            keep={"day": date(2025, 1, 2)},
            usage=Usage(10, 2, 12, 4, None),
        ),
        make_result("b", error=server_error()),
        make_result("b", content="Oslo", keep={"day": date(2025, 1, 3)}),
        make_result("c", error=client_error("model not found")),
        make_result("d", error=RetriesExhausted(NetworkError("connection reset"), attempts=6)),
    ]
    with open_output(out, spec) as opened:
        write_parts(opened.results_dir, spec, results, input_schema={"day": pl.Date}, **kw)
    return spec


def export(out: Path, fmt: str) -> bytes:
    buffer = io.BytesIO()
    rows = export_results(out, fmt, buffer)
    assert rows == read_results(out).height
    return buffer.getvalue()


def lines(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in data.splitlines()]


def test_jsonl_has_one_line_per_result_with_every_column(tmp_path: Path) -> None:
    fill(tmp_path)
    rows = {row["row_id"]: row for row in lines(export(tmp_path, "jsonl"))}
    assert sorted(rows) == ["a", "b", "c", "d"]  # b once: its ok retry
    assert rows["b"]["status"] == "ok" and rows["b"]["content"] == "Oslo"
    assert rows["a"]["day"] == "2025-01-02"
    assert rows["a"]["started_at"] == "2025-03-01T12:00:00Z"
    assert rows["a"]["tool_calls"][0]["function"]["name"] == "lookup"
    assert rows["a"]["logprobs"][1]["token"] == "is"
    assert rows["c"]["error_type"] == "APIStatusError" and rows["c"]["http_status"] == 400
    as_frame = pl.read_ndjson(io.BytesIO(export(tmp_path, "jsonl")))
    assert set(as_frame.columns) == set(read_results(tmp_path).columns)


def test_openai_batch_lines(tmp_path: Path) -> None:
    fill(tmp_path)
    rows = {row["custom_id"]: row for row in lines(export(tmp_path, "openai-batch"))}
    assert sorted(rows) == ["a#0", "b#0", "c#0", "d#0"]
    ok = rows["a#0"]
    assert set(ok) == {"id", "custom_id", "response", "error"}
    assert ok["id"].startswith("batch_req_") and ok["error"] is None
    assert ok["response"]["status_code"] == 200
    body = ok["response"]["body"]
    assert body["object"] == "chat.completion" and body["id"] == "chatcmpl-a"
    assert body["model"] == "gpt-test-2025" and isinstance(body["created"], int)
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"] == "Paris"
    assert choice["message"]["tool_calls"][0]["function"]["arguments"] == '{"q": 1}'
    assert [t["token"] for t in choice["logprobs"]["content"]] == ["Par", "is"]
    assert choice["finish_reason"] == "stop"
    assert body["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 2,
        "total_tokens": 12,
        "prompt_tokens_details": {"cached_tokens": 4},
    }
    http_error = rows["c#0"]
    assert http_error["response"]["status_code"] == 400 and http_error["error"] is None
    assert http_error["response"]["body"]["error"]["message"] == "model not found"
    no_response = rows["d#0"]
    assert no_response["response"] is None
    assert no_response["error"] == {
        "code": "NetworkError",
        "message": no_response["error"]["message"],
    }
    assert "connection reset" in no_response["error"]["message"]


def test_openai_batch_uses_the_raw_response_when_kept(tmp_path: Path) -> None:
    spec = make_spec(output={"keep_raw": True})
    raw = '{"id": "chatcmpl-raw", "object": "chat.completion", "service_tier": "default"}'
    with open_output(tmp_path, spec) as opened:
        write_parts(opened.results_dir, spec, [make_result("a", raw=raw)])
    (line,) = lines(export(tmp_path, "openai-batch"))
    assert line["response"]["body"] == orjson.loads(raw)


def test_openai_batch_with_n_choices(tmp_path: Path) -> None:
    spec = make_spec(request={"n": 2})
    choices = [make_choice("one", index=0), make_choice("two", index=1)]
    with open_output(tmp_path, spec) as opened:
        write_parts(opened.results_dir, spec, [make_result("a", choices=choices)])
    (line,) = lines(export(tmp_path, "openai-batch"))
    body_choices = line["response"]["body"]["choices"]
    assert [(c["index"], c["message"]["content"]) for c in body_choices] == [(0, "one"), (1, "two")]


def test_csv_flattens_nested_columns_to_json_text(tmp_path: Path) -> None:
    fill(tmp_path, part_rows=2)  # several parts, and more than one slice would be fine too
    frame = pl.read_csv(io.BytesIO(export(tmp_path, "csv")), infer_schema=False)
    original = read_results(tmp_path)
    assert frame.columns == original.columns and frame.height == original.height
    a = frame.filter(pl.col("row_id") == "a").row(0, named=True)
    original_a = original.filter(pl.col("row_id") == "a").row(0, named=True)
    assert orjson.loads(a["tool_calls"]) == original_a["tool_calls"]
    assert orjson.loads(a["logprobs"])[0]["top_logprobs"][1] == {
        "token": "x",
        "logprob": -3.0,
        "bytes": None,
    }
    assert a["content"] == "Paris" and a["day"] == "2025-01-02"
    assert frame.filter(pl.col("row_id") == "c").item(0, "tool_calls") is None


def test_export_to_file_writes_whole_files_only(tmp_path: Path) -> None:
    out = tmp_path / "out"
    fill(out)
    target = tmp_path / "export.jsonl"
    assert export_to_file(out, "jsonl", target) == 4
    assert len(target.read_bytes().splitlines()) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.jsonl", "out"]


def test_unknown_format(tmp_path: Path) -> None:
    fill(tmp_path)
    with pytest.raises(ValueError, match="unknown export format 'xml'"):
        export_results(tmp_path, "xml", io.BytesIO())
