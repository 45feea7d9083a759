"""Interop: the lines of ``plan --out`` run elsewhere (a Batch API, ``vllm run-batch``), and
their result files imported back, joined to their rows by custom_id."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import openai
import orjson
import polars as pl
import pytest

import batchchat
from batchchat.batchops import import_results
from batchchat.errors import InputError
from batchchat.pricing import PriceTable
from tests.batchapi._jobs import answer_prefix, batch_spec
from tests.conftest import SimulatorFactory


async def run_elsewhere(server_url: str, requests: Path, out: Path) -> tuple[Path, Path | None]:
    """The Batch API by hand, as a user would with OpenAI's client: upload, create, wait,
    download the output and error files."""
    content = await asyncio.to_thread(requests.read_bytes)
    async with openai.AsyncOpenAI(base_url=server_url, api_key="k", max_retries=0) as client:
        file = await client.files.create(
            file=("requests.jsonl", io.BytesIO(content)), purpose="batch"
        )
        batch = await client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        while batch.status not in ("completed", "expired", "failed"):
            await asyncio.sleep(0.05)
            batch = await client.batches.retrieve(batch.id)
        assert batch.output_file_id is not None
        output = out / "batch_output.jsonl"
        output.write_bytes((await client.files.content(batch.output_file_id)).content)
        if batch.error_file_id is None:
            return output, None
        errors = out / "batch_errors.jsonl"
        errors.write_bytes((await client.files.content(batch.error_file_id)).content)
        return output, errors


async def test_batch_api_files_made_by_hand_are_imported_as_typed_results(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    server = await simulator_factory(
        batch={"time_scale": 3000, "fail_lines": 0.2, "fail_status": 400}
    )
    spec = batch_spec(tmp_path, rows=30, mode="online", request={"max_tokens": 40})
    requests = tmp_path / "requests.jsonl"
    batchchat.plan(spec, batch_file=requests)
    output, errors = await run_elsewhere(server.base_url, requests, tmp_path)
    assert errors is not None
    report = await asyncio.to_thread(batchchat.import_results, spec, [output, errors])
    df = batchchat.read_results(spec.output_dir)
    assert df.height == 30 and report.rows_total == 30
    ok, failed = df.filter(pl.col("status") == "ok"), df.filter(pl.col("status") == "error")
    assert failed.height > 0 and set(failed["http_status"]) == {400}
    for row in ok.iter_rows(named=True):  # every answer is joined to its own row
        assert row["content"].startswith(answer_prefix(row["text"]))
    assert set(ok["batch_id"]) == {"import:batch_output.jsonl"}
    prices = PriceTable.from_spec(spec)
    first = ok.row(0, named=True)
    usage = batchchat.models.Usage(first["prompt_tokens"], first["completion_tokens"])
    assert first["cost_usd"] == pytest.approx(prices.cost_usd(first["model"], usage, "batch"))
    # what failed can be sent online afterwards: the imported ok rows are kept
    again = await asyncio.to_thread(batchchat.run, spec)
    assert again.rows_ok == 30 and again.rows_skipped == ok.height


def test_vllm_run_batch_output_is_imported_with_its_errors(tmp_path: Path) -> None:
    spec = batch_spec(tmp_path, rows=3, mode="online")
    completion = {
        "id": "cmpl-1",
        "object": "chat.completion",
        "model": "Qwen/Qwen2.5-0.5B-Instruct",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "fine"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
    }
    answered = {"status_code": 200, "request_id": "vllm-batch-1", "body": completion}
    refused = {"status_code": 400, "request_id": "vllm-batch-2", "body": None}
    lines = [
        {"id": "vllm-1", "custom_id": "r00000#0", "response": answered, "error": None},
        {"id": "vllm-2", "custom_id": "r00002#0", "response": refused, "error": "No such model."},
    ]
    results = tmp_path / "results.jsonl"
    content = b"\n".join(orjson.dumps(line) for line in lines) + b"\n{a line cut short\n"
    results.write_bytes(content)
    done = import_results(spec, [results], batch_id="vllm-run-1")
    assert (done.count.ok, done.count.failed, done.count.unreadable) == (1, 1, 1)
    report = done.outcome.report
    df = batchchat.read_results(spec.output_dir).sort("row_id")
    assert df["row_id"].to_list() == ["r00000", "r00002"] and report.rows_ok == 1
    assert df["text"].to_list() == ["review number 0 about item 0", "review number 2 about item 14"]
    assert df["content"][0] == "fine" and df["model"][0] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert "No such model." in df["error_message"][1]
    assert set(df["batch_id"]) == {"vllm-run-1"}


def test_a_file_from_another_job_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    spec = batch_spec(tmp_path, rows=3, mode="online")
    alien = tmp_path / "alien.jsonl"
    alien.write_bytes(
        orjson.dumps({"custom_id": "someone-else#0", "response": None, "error": None}) + b"\n"
    )
    with pytest.raises(
        InputError, match=r"1 result line\(s\) name a custom_id this job does not have"
    ) as info:
        batchchat.import_results(spec, [alien])
    assert f"{alien}:1: 'someone-else#0'" in str(info.value)
    assert not spec.output_dir.exists()


async def test_results_are_imported_into_a_chained_job_that_has_run(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    # the input is another job's output directory: import compiles the job as run does,
    # so the directory's recorded input (and its row ids) are the job's own
    server = await simulator_factory(batch={"time_scale": 3000})
    upstream = batch_spec(tmp_path / "up", rows=8, mode="online")
    assert (await asyncio.to_thread(batchchat.run, upstream)).rows_ok == 8
    spec = batch_spec(
        tmp_path / "down",
        rows=1,
        mode="online",
        input={"path": str(upstream.output_dir), "id_column": None, "where": "sample = 0"},
        request={"max_tokens": 40},
    )
    first = await asyncio.to_thread(batchchat.run, spec, retry_failed=False)
    assert first.rows_ok == 8
    requests = tmp_path / "requests.jsonl"
    batchchat.plan(spec, batch_file=requests)
    output, _ = await run_elsewhere(server.base_url, requests, tmp_path)
    report = await asyncio.to_thread(batchchat.import_results, spec, [output])
    assert report.rows_ok == 8  # each row's first answer is kept, none written twice
    assert batchchat.read_results(spec.output_dir)["batch_id"].is_null().all()
