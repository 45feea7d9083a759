"""Batch mode across processes and crashes: --no-wait sequences, a batch created by a run
killed before it saved the id, and the guards that keep rows from being paid twice."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

import batchchat
from batchchat.batchapi.state import load_state
from batchchat.errors import ResumeError, SpecError
from batchchat.models import ExitCode, StopReason
from batchchat.results.layout import OutputLayout
from batchchat.results.status import read_status
from batchchat.runner import RunOptions, run_job
from tests.batchapi._jobs import batch_spec
from tests.conftest import SimulatorFactory

NO_WAIT = RunOptions(wait=False)


async def test_no_wait_runs_finish_the_job_as_a_sequence_of_short_runs(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    server = await simulator_factory(batch={"time_scale": 2000, "fail_lines": 0.2})
    spec = batch_spec(tmp_path, server.base_url, rows=50, batch={"lines_per_batch": 20})
    reasons = []
    for _ in range(100):
        outcome = await run_job(spec, RunOptions(wait=False))
        reasons.append(outcome.stats.stop_reason)
        if outcome.stats.stop_reason == StopReason.COMPLETED:
            break
        assert outcome.exit_code == ExitCode.PENDING
        assert read_status(spec.output_dir).stop_reason == "pending"
    assert reasons[0] == StopReason.PENDING and reasons[-1] == StopReason.COMPLETED
    assert len(reasons) >= 3  # submitted, then collected and resubmitted, then collected
    df = batchchat.read_results(spec.output_dir)
    assert df.height == 50 and (df["status"] == "ok").all()
    counts = server.stats()["batch"]
    assert counts["lines_submitted"] == 50 + counts["lines_failed"]
    assert sorted(server.stats()["answers"].values()) == [1] * 50


async def test_a_batch_created_by_a_run_killed_before_saving_its_id_is_found_not_made_again(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    server = await simulator_factory(batch={"time_scale": 2000})
    spec = batch_spec(tmp_path, server.base_url, rows=30, batch={"lines_per_batch": 10})
    assert (await run_job(spec, NO_WAIT)).exit_code == ExitCode.PENDING
    assert server.stats()["batch"]["batches_created"] == 3
    # as a kill between the create call and the state write leaves it
    layout = OutputLayout(spec.output_dir)
    state = orjson.loads(layout.batch_state.read_bytes())
    lost = state["shards"][1]
    lost_id, lost["batch_id"], lost["phase"], lost["status"] = (
        lost["batch_id"],
        None,
        "creating",
        None,
    )
    layout.batch_state.write_bytes(orjson.dumps(state))
    outcome = await run_job(spec)
    assert outcome.exit_code == ExitCode.OK and outcome.report.rows_ok == 30
    assert server.stats()["batch"]["batches_created"] == 3  # found by its metadata
    assert load_state(layout).shards[1].batch_id == lost_id


async def test_an_online_run_is_refused_while_batches_are_at_the_provider(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    server = await simulator_factory(batch={"time_scale": 1})  # they will not end soon
    spec = batch_spec(tmp_path, server.base_url, rows=10)
    assert (await run_job(spec, NO_WAIT)).exit_code == ExitCode.PENDING
    online = batch_spec(tmp_path, server.base_url, rows=10, mode="online")
    with pytest.raises(
        ResumeError, match=r"1 batch\(es\) of this job are at the Batch API"
    ) as info:
        await run_job(online)
    assert "batchchat cancel" in str(info.value)
    with pytest.raises(ResumeError, match="--force would lose track of them"):
        await run_job(spec, RunOptions(force=True))
    assert server.stats()["requests"] == 0  # no row was sent online


async def test_shards_never_sent_are_handed_back_to_an_online_run(tmp_path: Path) -> None:
    # a batch refused whole stops the run: the shards after it stay unsent
    spec = batch_spec(
        tmp_path,
        rows=30,
        simulator={"batch": {"time_scale": 3000, "fail_validation": 1.0}},
        batch={"lines_per_batch": 10, "max_enqueued_tokens": 150},
    )
    assert (await run_job(spec)).stats.stop_reason == StopReason.FATAL
    layout = OutputLayout(spec.output_dir)
    assert any(shard.phase == "planned" for shard in load_state(layout).shards)
    online = batch_spec(tmp_path, rows=30, mode="online")
    outcome = await run_job(online)
    assert outcome.exit_code == ExitCode.OK and outcome.report.rows_ok == 30
    assert not load_state(layout).live()  # handed back, then sent online


async def test_no_wait_is_refused_with_the_in_process_simulator(tmp_path: Path) -> None:
    spec = batch_spec(tmp_path, rows=5)
    with pytest.raises(SpecError, match="--no-wait needs a Batch API that outlives this process"):
        await run_job(spec, NO_WAIT)
    assert not spec.output_dir.exists()  # refused before anything was written


async def test_batches_of_an_in_process_simulator_that_ended_are_sent_again(
    tmp_path: Path,
) -> None:
    spec = batch_spec(tmp_path, rows=12, simulator={"batch": {"time_scale": 300}})
    layout = OutputLayout(spec.output_dir)
    stop = asyncio.Event()
    run = asyncio.create_task(run_job(spec, stop=stop))
    for _ in range(500):  # another task's file: watched until its batch exists
        if layout.batch_state.exists() and load_state(layout).shards[0].batch_id:
            break
        await asyncio.sleep(0.02)
    stop.set()
    assert (await run).stats.stop_reason == StopReason.INTERRUPTED
    # that simulator, and the batch in it, ended with the run: the lines go again
    again = await run_job(spec)
    assert again.exit_code == ExitCode.OK and again.report.rows_ok == 12
    assert len(load_state(layout).shards[0].history) == 1
