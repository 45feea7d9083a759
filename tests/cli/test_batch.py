"""Batch mode as users and schedulers meet it: exit codes (75: run again later), messages,
``status`` with its batches, ``cancel``, ``import``, ``plan`` at batch prices, the example job."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from click.testing import CliRunner, Result

import batchchat
from batchchat.cli import main
from batchchat.cli.simulate import build_spec
from batchchat.spec import SimulatorSpec
from tests._specs import merge_sections
from tests.batchapi._jobs import write_rows
from tests.conftest import SimulatorFactory

ROOT = Path(__file__).resolve().parents[2]


def write_job(tmp_path: Path, base_url: str = "simulator", rows: int = 20, **extra: Any) -> Path:
    write_rows(tmp_path / "rows.jsonl", rows)
    spec: dict[str, Any] = {
        "name": "cli-batch",
        "mode": "batch",
        "input": {"path": "rows.jsonl", "id_column": "id"},
        "endpoint": {"base_url": base_url, "simulator": {"batch": {"time_scale": 3000}}},
        "request": {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "Label: {{ text }}"}],
            "max_tokens": 8,
        },
        "batch": {"poll_interval_s": 0.05, "max_poll_interval_s": 0.2, "lines_per_batch": 10},
        "output": {"path": "out"},
    }
    merge_sections(spec, extra)
    if base_url != "simulator":
        del spec["endpoint"]["simulator"]
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def invoke(*args: Any) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args])


async def invoke_beside(*args: Any) -> Result:
    """``invoke`` on a worker thread: the simulator of this test keeps serving meanwhile
    (not for ``run``, whose signal handlers need the main thread: see :func:`run_process`)."""
    return await asyncio.to_thread(invoke, *args)


async def run_process(*args: Any) -> tuple[int, str]:
    """``batchchat ARGS`` in a process of its own: its exit code and what it printed."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "batchchat",
        *map(str, args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, output.decode()


def test_a_batch_run_says_what_it_cost_and_saved(tmp_path: Path) -> None:
    result = invoke("run", write_job(tmp_path))
    assert result.exit_code == 0, result.output
    assert "At online prices" in result.output and "saved" in result.output
    assert "Batches" in result.output and "2 completed" in result.output


def test_no_wait_with_the_built_in_simulator_exits_2_saying_why(tmp_path: Path) -> None:
    result = invoke("run", write_job(tmp_path), "--no-wait")
    assert result.exit_code == 2
    assert "--no-wait needs a Batch API that outlives this process" in result.output
    assert "batchchat simulate" in result.output


async def test_no_wait_exits_75_until_the_batches_are_collected_and_status_shows_them(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    server = await simulator_factory(batch={"time_scale": 1000})
    job = write_job(tmp_path, server.base_url)
    code, output = await run_process("run", job, "--no-wait")
    assert code == 75, output
    assert "lines are still at the Batch API" in output
    status = await invoke_beside("status", tmp_path / "out")
    assert status.exit_code == 75
    assert "pending" in status.output and "batches: 2 created, 20 lines" in status.output
    assert "batch_" in status.output and "(exit 75 means: run again later)" in status.output
    as_json = orjson.loads((await invoke_beside("status", tmp_path / "out", "--json")).output)
    assert as_json["state"] == "pending" and as_json["exit_code"] == 75
    assert [s["lines"] for s in as_json["batches"]["shards"]] == [10, 10]
    codes = [code]
    for _ in range(20):
        await asyncio.sleep(0.3)
        codes.append((await run_process("run", job, "--no-wait", "-q"))[0])
        if codes[-1] != 75:
            break
    assert codes[-1] == 0 and set(codes[:-1]) == {75}
    assert (await invoke_beside("status", tmp_path / "out")).exit_code == 0


@pytest.mark.parametrize(
    ("style", "code", "says"),
    [
        ("new-api", 2, "HTTP 501 api_not_implemented: API not implemented"),
        ("llamacpp", 2, "HTTP 404 not_found_error: File Not Found"),
        ("litellm", 1, "did not answer like a Batch API"),
    ],
)
async def test_an_endpoint_without_a_batch_api_gets_a_plain_message_and_its_exit_code(
    simulator_factory: SimulatorFactory, tmp_path: Path, style: str, code: int, says: str
) -> None:
    server = await simulator_factory(batch={"api": style})
    exit_code, output = await run_process("run", write_job(tmp_path, server.base_url))
    assert exit_code == code
    assert says in " ".join(output.split())
    assert "mode: online" in output and "batchchat plan JOB.yaml --out" in output
    assert "Traceback" not in output
    assert not (tmp_path / "out").exists()


async def test_a_refused_key_exits_1_without_showing_it(
    simulator_factory: SimulatorFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await simulator_factory(api_key="sk-the-right-one")
    monkeypatch.setenv("CLI_BATCH_KEY", "sk-a-wrong-one")
    job = write_job(tmp_path, server.base_url, endpoint={"api_key_env": "CLI_BATCH_KEY"})
    code, output = await run_process("run", job)
    assert code == 1
    assert "refused the key for the Batch API" in output
    assert "sk-a-wrong-one" not in output


def test_a_batch_that_fails_validation_exits_1_naming_its_reason(tmp_path: Path) -> None:
    job = write_job(
        tmp_path,
        endpoint={"simulator": {"batch": {"time_scale": 3000, "fail_validation": 1.0}}},
    )
    result = invoke("run", job)
    assert result.exit_code == 1
    assert "Stopped early: batch batch_" in result.output
    assert "failed validation: invalid_request: The batch input file is not valid." in result.output
    status = invoke("status", tmp_path / "out")
    assert "stopped early: batch batch_" in status.output


async def test_cancel_keeps_what_was_answered_and_says_what_it_did(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    server = await simulator_factory(batch={"time_scale": 10, "cancelling_s": 0})
    job = write_job(tmp_path, server.base_url)
    assert (await run_process("run", job, "--no-wait", "-q"))[0] == 75
    result = await invoke_beside("cancel", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert (
        "cancelled 2 batch(es)" in result.output and "Kept: 0 ok, 20 failed rows." in result.output
    )
    nothing = await invoke_beside("cancel", tmp_path / "elsewhere")
    assert nothing.exit_code == 2


def test_cancel_of_a_directory_without_batches_exits_2(tmp_path: Path) -> None:
    job = write_job(tmp_path, mode="online")
    assert invoke("run", job, "-q").exit_code == 0
    result = invoke("cancel", tmp_path / "out")
    assert result.exit_code == 2 and "has no batches to cancel" in result.output


def test_import_brings_in_result_files_joined_by_custom_id(tmp_path: Path) -> None:
    job = write_job(tmp_path, rows=3, mode="online")
    completion = {
        "id": "c",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
    }
    lines = [
        {
            "custom_id": f"r0000{i}#0",
            "response": {"status_code": 200, "body": completion},
            "error": None,
        }
        for i in range(3)
    ]
    results = tmp_path / "output.jsonl"
    results.write_bytes(b"\n".join(orjson.dumps(line) for line in lines))
    result = invoke("import", job, results)
    assert result.exit_code == 0, result.output
    assert (
        "imported 3 line(s) from 1 file(s)" in result.output and "3 ok, 0 failed" in result.output
    )
    assert batchchat.read_results(tmp_path / "out")["content"].to_list() == ["ok"] * 3
    again = invoke("import", job, results)
    assert again.exit_code == 0 and "3 already answered (kept)" in again.output
    alien = tmp_path / "alien.jsonl"
    alien.write_bytes(orjson.dumps({"custom_id": "zzz#0"}))
    refused = invoke("import", job, alien)
    assert refused.exit_code == 2 and "custom_id this job does not have" in refused.output


def test_plan_prices_a_batch_job_at_batch_prices_beside_the_online_ones(tmp_path: Path) -> None:
    result = invoke("plan", write_job(tmp_path), "--show", "0")
    assert result.exit_code == 0, result.output
    assert "at Batch API prices (online:" in result.output
    assert "~2 batch(es) of ≤ 10 lines, answered within 24h" in result.output


def test_simulate_takes_the_batch_api_knobs() -> None:
    spec = build_spec(
        SimulatorSpec(),
        {
            "batch_api": "new-api",
            "batch_time_scale": 86400.0,
            "batch_fail_lines": 0.1,
            "batch_token_limit": 9,
        },
    )
    batch = spec.batch
    assert (batch.api, batch.time_scale, batch.fail_lines, batch.enqueued_token_limit) == (
        "new-api",
        86400.0,
        0.1,
        9,
    )


def test_the_example_batch_job_runs_against_the_simulator_in_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    result = invoke("run", "jobs/batch.yaml", "-o", tmp_path / "out", "-q")
    assert result.exit_code == 0, result.output
    df = batchchat.read_results(tmp_path / "out")
    assert df.height == 200 and (df["status"] == "ok").all()
    assert df["batch_id"].is_not_null().all() and df["label"].is_not_null().all()
    assert os.fspath(ROOT / "jobs" / "batch.yaml")


async def test_cancel_without_waiting_exits_75_while_the_batches_cancel(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    server = await simulator_factory(batch={"time_scale": 10, "cancelling_s": 600})
    job = write_job(tmp_path, server.base_url)
    assert (await run_process("run", job, "--no-wait", "-q"))[0] == 75
    result = await invoke_beside("cancel", tmp_path / "out", "--no-wait")
    assert result.exit_code == 75
    assert "2 batch(es) are still cancelling" in result.output


def test_cancel_needs_the_jobs_own_spec(tmp_path: Path) -> None:
    state = tmp_path / "out" / "batches" / "state.json"
    state.parent.mkdir(parents=True)
    state.write_bytes(b'{"token": "t", "next_number": 1, "shards": []}')
    result = invoke("cancel", tmp_path / "out")
    assert result.exit_code == 2 and "no job.yaml" in result.output
