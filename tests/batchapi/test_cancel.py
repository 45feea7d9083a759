"""``cancel``: the running batches are cancelled, what they answered is kept, nothing is sent
again by itself, and shards never sent are dropped."""

from __future__ import annotations

import asyncio
from pathlib import Path

import polars as pl
import pytest

import batchchat
from batchchat.batchapi.state import load_state
from batchchat.batchops import cancel_job
from batchchat.errors import InputError, SpecError
from batchchat.models import ExitCode, StopReason
from batchchat.results.layout import OutputLayout
from batchchat.runner import RunOptions, run_job
from tests.batchapi._jobs import batch_spec
from tests.conftest import SimulatorFactory


async def test_cancelling_keeps_the_answers_and_sends_nothing_again(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    # 0.1 s validating, 2 s in progress, 0.2 s cancelling: cancelled part way through
    server = await simulator_factory(batch={"time_scale": 300, "shuffle": False})
    spec = batch_spec(
        tmp_path,
        server.base_url,
        rows=40,
        batch={"lines_per_batch": 20, "max_enqueued_tokens": 300},  # the 2nd waits its turn
    )
    assert (await run_job(spec, RunOptions(wait=False))).exit_code == ExitCode.PENDING
    await asyncio.sleep(0.8)
    done = await cancel_job(spec.output_dir)
    state = load_state(OutputLayout(spec.output_dir))
    first, *waiting = state.shards
    assert len(done.cancelled.cancelled) == 1 and done.cancelled.released == len(waiting) > 0
    assert done.cancelled.cancelling == 0 and not state.live()
    df = batchchat.read_results(spec.output_dir)
    ok, failed = df.filter(pl.col("status") == "ok"), df.filter(pl.col("status") == "error")
    assert ok.height > 0 and failed.height > 0 and df.height == first.lines
    assert failed["error_message"].str.contains("batch_cancelled").all()
    assert server.stats()["batch"]["lines_submitted"] == first.lines  # the others never went
    # a later run sends what was not answered (the failed rows and the dropped shard)
    all_at_once = spec.model_copy(
        update={"batch": spec.batch.model_copy(update={"max_enqueued_tokens": None})}
    )
    again = await run_job(all_at_once)
    assert again.exit_code == ExitCode.OK and again.report.rows_ok == 40


async def test_cancelling_without_waiting_leaves_the_collection_to_a_later_run(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    server = await simulator_factory(batch={"time_scale": 100, "cancelling_s": 30})
    spec = batch_spec(tmp_path, server.base_url, rows=10)
    await run_job(spec, RunOptions(wait=False))
    done = await cancel_job(spec.output_dir, wait=False)
    assert done.cancelled.cancelling == 1
    assert done.outcome.stats.stop_reason == StopReason.PENDING
    collected = await run_job(spec)  # collects the cancelled batch, resends nothing
    assert collected.stats.stop_reason == StopReason.COMPLETED
    assert server.stats()["batch"]["lines_submitted"] == 10


async def test_there_is_nothing_to_cancel_without_batches_or_in_the_built_in_simulator(
    tmp_path: Path,
) -> None:
    online = batch_spec(tmp_path / "a", rows=3, mode="online")
    await run_job(online)
    with pytest.raises(InputError, match="has no batches to cancel"):
        await cancel_job(online.output_dir)
    spec = batch_spec(tmp_path / "b", rows=3, simulator={"batch": {"time_scale": 3000}})
    await run_job(spec)
    with pytest.raises(SpecError, match="ran in the built-in simulator"):
        await cancel_job(spec.output_dir)


async def test_a_chained_batch_job_is_cancelled_like_any_other(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    # its input is another job's output directory: cancel opens the output as run does, with
    # the input it recorded (a batch collected already, the other one running)
    server = await simulator_factory(
        batch={"time_scale": 100, "in_progress_s": 60, "cancelling_s": 30}
    )
    upstream = batch_spec(tmp_path / "up", server.base_url, rows=6, mode="online")
    assert (await run_job(upstream)).exit_code == ExitCode.OK
    spec = batch_spec(
        tmp_path / "down",
        server.base_url,
        rows=1,
        input={"path": str(upstream.output_dir), "id_column": None},
        batch={"lines_per_batch": 3, "max_enqueued_tokens": 60},  # one batch at a time
    )
    assert (await run_job(spec, RunOptions(wait=False))).exit_code == ExitCode.PENDING
    await asyncio.sleep(1.5)  # the first batch ends (~1.2 s)
    assert (await run_job(spec, RunOptions(wait=False))).exit_code == ExitCode.PENDING
    assert batchchat.read_results(spec.output_dir).height == 3  # collected: on disk
    done = await cancel_job(spec.output_dir, wait=False)
    assert done.cancelled.cancelling == 1
    collected = await run_job(spec)  # and the job, run again, collects and goes on
    assert collected.stats.stop_reason == StopReason.COMPLETED
    assert collected.report.rows_ok + collected.report.rows_error == 6
