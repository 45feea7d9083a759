"""The Ray engine's workers in one process: planning, sending, writing and stopping together.

Two :class:`WorkerEngine` s share an in-process coordinator and writer (what the Ray actors
wrap) and send to the simulator over HTTP: every row once, the job's one rate limit kept
between them, error rows for rows a template fails on, a stop heard by both.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pyarrow as pa
import pytest

import batchchat
from batchchat.cluster.limits import Coordinator
from batchchat.cluster.sink import ResultWriter
from batchchat.cluster.worker import (
    POSITION,
    WorkerEngine,
    WorkerSetup,
    contiguous_runs,
    error_message,
    worker_setup,
)
from batchchat.errors import DiskFullError, SinkError
from batchchat.execute.endpoint import Target, chat_completions_url
from batchchat.job import compile_job
from batchchat.planning.reader import iter_batches
from batchchat.results.ledger import ResumeIndex, build_index
from batchchat.results.outdir import open_output
from batchchat.results.runstats import stats_from_dict
from batchchat.spec import JobSpec, load_spec
from tests.cluster.test_limits import Direct
from tests.conftest import SimulatorFactory


def make_job(tmp_path: Path, base_url: str, rows: int = 40, **extra: Any) -> JobSpec:
    data = tmp_path / "rows.csv"
    pl.DataFrame({"text": [f"review {i}" for i in range(rows)], "n": [1] * rows}).write_csv(data)
    spec: dict[str, Any] = {
        "name": "t",
        "input": {"path": str(data)},  # no id column: a row's id is its position
        "endpoint": {"base_url": base_url, "timeout_s": 5},
        "request": {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "Label: {{ text }}"}],
            "max_tokens": 4,
        },
        "output": {"path": str(tmp_path / "out"), "keep_columns": ["text"]},
        "retry": {"max_attempts": 3, "max_wait_s": 0.05, "initial_wait_s": 0.01},
        "limits": {"max_concurrency": 8},
        **extra,
    }
    return load_spec(spec)


def batches(spec: JobSpec, size: int) -> Iterator[pa.Table]:
    """The input with each row's position, ``size`` rows at a time (what Ray hands out)."""
    source = compile_job(spec, require_key=False).plan.source
    position = 0
    for frame in iter_batches(source):
        numbered = frame.with_columns(
            pl.int_range(position, position + frame.height).alias(POSITION)
        )
        position += frame.height
        for start in range(0, numbered.height, size):
            yield numbered.slice(start, size).to_arrow()


async def run_workers(
    spec: JobSpec, *, workers: int = 2, size: int = 8, done: ResumeIndex | None = None
) -> tuple[list[WorkerEngine], Coordinator]:
    """Every batch through ``workers`` engines (round robin), as Ray's pool would."""
    job = compile_job(spec, require_key=False)
    coordinator = Coordinator()
    with open_output(spec.output_dir, spec, run_id="run-1") as out:
        writer = ResultWriter(
            out.results_dir,
            spec,
            job.plan.source,
            run_id="run-1",
            secrets=frozenset(),
            driver_pid=os.getpid(),
        )
        url = chat_completions_url(spec.endpoint.base_url)
        setup = WorkerSetup(
            spec=spec,
            source=job.plan.source,
            run_id="run-1",
            target=Target(url=url, headers={}, display=url),
            secrets=frozenset(),
            concurrency=spec.limits.max_concurrency,
            done=done or ResumeIndex.empty(),
        )
        setup = worker_setup(setup, workers)
        engines = [
            WorkerEngine(setup, Direct(coordinator), writer, name=f"w{i}") for i in range(workers)
        ]
        try:
            calls = [engines[i % workers].process(b) for i, b in enumerate(batches(spec, size))]
            await asyncio.gather(*calls)
        finally:
            for engine in engines:
                await engine.aclose()
            await writer.close()
    return engines, coordinator


async def test_every_row_is_answered_once_with_the_ids_a_local_run_gives(
    tmp_path: Path, simulator_factory: SimulatorFactory
) -> None:
    sim = await simulator_factory()
    spec = make_job(tmp_path, sim.base_url)
    engines, coordinator = await run_workers(spec)
    results = batchchat.read_results(spec.output_dir).sort("row_index")
    assert results["row_id"].to_list() == [str(i) for i in range(40)]
    assert results["row_index"].to_list() == list(range(40))
    assert results["text"].to_list() == [f"review {i}" for i in range(40)]
    assert set(results["status"]) == {"ok"} and sim.stats()["requests"] == 40
    # five batches of 8, round robin: three to the first worker, two to the second
    assert [engine.stats.results_ok for engine in engines] == [24, 16]
    counted = stats_from_dict(orjson.loads(engines[1].summary()["stats"][0].as_py()))
    assert counted.results_ok == 16 and counted.requests_sent == 16
    assert coordinator.state().stop is None


async def test_rows_done_before_are_not_sent_and_a_template_failure_is_an_error_row(
    tmp_path: Path, simulator_factory: SimulatorFactory
) -> None:
    sim = await simulator_factory()
    messages = [{"role": "user", "content": "{{ text }}: {{ 10 // n }}"}]
    request = {"model": "m", "messages": messages, "max_tokens": 4}
    spec = make_job(tmp_path, sim.base_url, rows=24, request=request)
    await run_workers(spec)
    # two rows more, on which the template fails (n = 0); past the rows a run tries first
    more = pl.DataFrame({"text": [f"review {i}" for i in range(26)], "n": [1] * 24 + [0, 0]})
    more.write_csv(spec.input.path)
    done = build_index(spec.output_dir / "results")
    engines, _ = await run_workers(spec, done=done)
    assert sum(engine.stats.skipped for engine in engines) == 24
    assert sim.stats()["requests"] == 24  # the two new rows were never sent
    rows = batchchat.read_results(spec.output_dir).sort("row_index")
    assert rows.height == 26 and rows["status"].to_list()[24:] == ["error", "error"]
    assert set(rows["error_type"].to_list()[24:]) == {"TemplateError"}


async def test_two_workers_keep_the_one_rate_limit_of_the_job(
    tmp_path: Path, simulator_factory: SimulatorFactory
) -> None:
    # the server's window starts full: any worker sending beyond the job's RPM gets 429s
    sim = await simulator_factory(rpm=1800, prefill=True)
    spec = make_job(tmp_path, sim.base_url, rows=30, limits={"rpm": 1800, "max_concurrency": 8})
    engines, coordinator = await run_workers(spec)
    # two workers each pacing at the job's rate alone would meet a 429 for about every
    # other request; sharing, a window's edge may refuse one
    assert sim.stats()["by_status"].get("429", 0) <= 2
    assert sum(engine.stats.results_ok for engine in engines) == 30
    assert all(engine.stats.results_ok for engine in engines)  # both sent
    # a sum of fractional leases and returns: 30 can come out as 29.999999999999993
    granted = round(coordinator.granted[("requests", 1800)], 9)
    assert 30 <= granted <= 30 + 2  # what was leased and not used went back


async def test_a_fatal_error_in_one_worker_stops_them_all(
    tmp_path: Path, simulator_factory: SimulatorFactory
) -> None:
    sim = await simulator_factory(api_key="sk-the-right-one")
    spec = make_job(tmp_path, sim.base_url, rows=200)
    _, coordinator = await run_workers(spec, size=20)
    state = coordinator.state()
    assert state.stop == "fatal" and "401" in (state.message or "")
    assert sim.stats()["requests"] < 200  # they stopped sending
    rows = batchchat.read_results(spec.output_dir)
    assert set(rows["status"]) == {"error"} and rows.height == sim.stats()["requests"]


async def test_a_writer_that_cannot_write_stops_the_run(
    tmp_path: Path, simulator_factory: SimulatorFactory
) -> None:
    class FullDisk:
        async def write(self, table: pa.Table) -> int:
            raise DiskFullError("the disk holding out/results is full")

    sim = await simulator_factory()
    spec = make_job(tmp_path, sim.base_url, rows=20)
    job = compile_job(spec, require_key=False)
    coordinator = Coordinator()
    url = chat_completions_url(spec.endpoint.base_url)
    setup = WorkerSetup(
        spec, job.plan.source, "r", Target(url, {}, url), frozenset(), 4, ResumeIndex.empty()
    )
    engine = WorkerEngine(setup, Direct(coordinator), FullDisk(), name="w")
    for batch in batches(spec, 10):
        await engine.process(batch)
    await engine.aclose()
    state = coordinator.state()
    assert (state.stop, state.error) == ("error", "DiskFullError")
    assert "is full" in (state.message or "")


async def test_workers_together_never_pass_the_budget_and_stop_as_one(
    tmp_path: Path, simulator_factory: SimulatorFactory
) -> None:
    sim = await simulator_factory(latency={"mean_ms": 5})
    # $0.000016 a request (16 tokens at $1 per million): 25 fit, if nothing is held back
    spec = make_job(
        tmp_path,
        sim.base_url,
        rows=200,
        budget={"max_cost_usd": 0.0004},
        pricing={"gpt-4o-mini": {"input": 1.0, "output": 1.0}},
    )
    engines, coordinator = await run_workers(spec, size=20)
    spent = sum(engine.stats.cost_usd for engine in engines)
    assert coordinator.state().stop == "budget"
    assert 0.0004 * 0.8 < spent <= 0.0004  # near the cap, never past it
    assert all(engine.stats.results_ok for engine in engines)  # both sent
    assert coordinator.budget_lent_usd <= 0.0004
    rows = batchchat.read_results(spec.output_dir)
    assert rows.height == sim.stats()["requests"] and rows["cost_usd"].sum() == pytest.approx(spent)


async def test_the_writer_writes_nothing_once_the_driver_is_gone(tmp_path: Path) -> None:
    spec = make_job(tmp_path, "http://127.0.0.1:9/v1")
    gone = await asyncio.create_subprocess_exec("true")
    await gone.wait()  # a process that was, and is no more
    with open_output(spec.output_dir, spec, run_id="run-1") as out:
        source = compile_job(spec, require_key=False).plan.source
        writer = ResultWriter(
            out.results_dir, spec, source, run_id="run-1", secrets=frozenset(), driver_pid=gone.pid
        )
        with pytest.raises(SinkError, match=rf"driver \(pid {gone.pid}\) is gone"):
            await writer.write(pa.table({"row_id": ["0"]}))
        assert await writer.close() == 0
    assert not list((spec.output_dir / "results").glob("*.parquet"))


@pytest.mark.parametrize(
    ("positions", "runs"),
    [
        ([], []),
        ([5, 6, 7], [(0, 3, 5)]),
        ([5, 6, 20, 21, 22, 9], [(0, 2, 5), (2, 3, 20), (5, 1, 9)]),
    ],
)
def test_contiguous_runs(positions: list[int], runs: list[tuple[int, int, int]]) -> None:
    assert contiguous_runs(pl.Series(positions, dtype=pl.Int64)) == runs


def test_error_messages_unwrap_what_a_ray_task_raised() -> None:
    assert error_message(DiskFullError("full")) == "full"
    assert error_message(KeyError("x")) == "KeyError: 'x'"
