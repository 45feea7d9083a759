"""Batch mode killed with SIGKILL at ten moments — while uploading, creating a batch, polling
and downloading — and run again each time: no batch is created twice for the same lines,
no answer is lost, every row ends with exactly one ok result.

The simulator (in this process, outliving the killed runs) waits ``answer_delay_s`` after
each Batch API call has acted before it answers: a create killed then has made its batch
without the run learning its id, which the next run must find by its metadata.
"""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

import orjson
import polars as pl
import pytest

from batchchat.batchapi.state import load_state
from batchchat.results.layout import OutputLayout
from tests.batchapi._jobs import batch_spec
from tests.conftest import SimulatorFactory

ROWS = 400
#: the phase each kill waits for before it strikes (then a random extra moment)
TARGETS = (
    "uploading",
    "creating",
    "creating",
    "submitted",
    "uploading",
    "creating",
    "submitted",
    "collecting",
    "collecting",
    "collecting",
)

pytestmark = pytest.mark.slow


def write_job(tmp_path: Path, base_url: str) -> Path:
    spec = batch_spec(tmp_path, base_url, rows=ROWS, batch={"lines_per_batch": 50})
    job = tmp_path / "job.yaml"
    data = spec.model_dump(mode="json", exclude_none=True)
    job.write_bytes(orjson.dumps(data))  # JSON is YAML
    return job


def phases(layout: OutputLayout) -> set[tuple[str, str]]:
    """(shard, phase) pairs of the state on disk now (it is replaced atomically)."""
    if not layout.batch_state.exists():
        return set()
    return {(shard.id, shard.phase) for shard in load_state(layout).shards}


async def kill_in(job: Path, layout: OutputLayout, target: str, rng: random.Random) -> str:
    """Start a run, SIGKILL it once some shard newly reaches ``target`` (or at a random
    moment when none does within a few seconds); the phase it was killed in."""
    before = phases(layout)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "batchchat", "run", str(job), "-q",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    hit = "random"
    for _ in range(400):  # another process's file: watched every 10 ms
        fresh = phases(layout) - before
        if any(phase == target for _, phase in fresh):
            hit = target
            break
        if process.returncode is not None:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(rng.uniform(0.0, 0.1))
    if process.returncode is None:
        process.kill()
    await process.wait()
    return hit


async def test_sigkill_at_ten_moments_never_creates_a_batch_twice_nor_loses_an_answer(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    server = await simulator_factory(batch={"time_scale": 400, "answer_delay_s": 0.1})
    job = write_job(tmp_path, server.base_url)
    layout = OutputLayout(tmp_path / "out")
    rng = random.Random(16)
    hits = [await kill_in(job, layout, target, rng) for target in TARGETS]
    assert {"uploading", "creating", "submitted", "collecting"} <= set(hits), hits

    final = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "batchchat", "run", str(job), "-q"
    )
    assert await asyncio.wait_for(final.wait(), 120) == 0

    batch = server.stats()["batch"]
    state = load_state(layout)
    assert batch["lines_submitted"] == ROWS and batch["most_submissions"] == 1  # no line twice
    assert batch["batches_created"] == len(state.shards) == ROWS // 50
    assert sorted(server.stats()["answers"].values()) == [1] * ROWS  # nothing answered twice
    raw = pl.read_parquet(layout.results / "part-*.parquet")
    assert raw.height == ROWS and raw["row_id"].n_unique() == ROWS  # nothing lost or doubled
    assert (raw["status"] == "ok").all()
