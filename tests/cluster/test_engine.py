"""Jobs on a real (local) Ray: the same output as a local run, resume across engines, a kill.

These need the ``ray`` extra (``pip install -e '.[ray]'``): without it they skip and say
so, unless ``BATCHCHAT_REQUIRE_RAY`` is set (CI sets it). They share one Ray of 2 CPUs.
The server is the test's own simulator on 127.0.0.1 (served from the test's loop while
the run blocks a thread), so what it counts -- requests, and answers per request content
-- says what was sent, independently of batchchat's own counters.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from polars.testing import assert_frame_equal

import batchchat
from batchchat.errors import SpecError
from batchchat.results.ledger import sources
from batchchat.results.runstats import load_stats
from batchchat.simulator import SimulatorServer
from batchchat.simulator.stats import key_of
from batchchat.spec import load_spec
from tests.conftest import SimulatorFactory

pytestmark = [
    pytest.mark.usefixtures("local_ray"),
    # Ray warns of its own deprecations, from its own code (warnings are errors here)
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray"),
]

#: what differs between two runs of the same rows: when, by which run, in which response
RUN_COLUMNS = ["run_id", "response_id", "started_at", "finished_at", "latency_ms"]


def make_spec(tmp_path: Path, rows: int, base_url: str, **simulator: Any) -> dict[str, Any]:
    data = tmp_path / "rows.parquet"
    frame = pl.DataFrame(
        {"text": [f"review {i}" for i in range(rows)], "stars": [i % 5 for i in range(rows)]}
    )
    frame.write_parquet(data, row_group_size=37)
    endpoint: dict[str, Any] = {"base_url": base_url}
    if simulator:
        endpoint["simulator"] = simulator
    return {
        "name": "ray-test",
        "input": {"path": str(data), "batch_size": 50},  # a row's id is its position
        "endpoint": endpoint,
        "request": {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "{{ stars }} stars: {{ text }}"}],
            "max_tokens": 4,
        },
        "seed": {"base": 7, "per_row": True},
        "samples": 2,
        "output": {
            "path": str(tmp_path / "out"),
            "keep_columns": ["text"],
            "labels": ["positive", "negative", "neutral", "mixed"],
        },
        "limits": {"max_concurrency": 16},
    }


async def run_in_thread(spec: Any, **options: Any) -> batchchat.RunReport:
    """``batchchat.run`` on a thread, so the test's loop goes on serving its simulator."""
    return await asyncio.to_thread(batchchat.run, spec, **options)


def sent_once_each(sim: SimulatorServer) -> bool:
    """No request content (row and sample: each has its own seed) reached the server twice."""
    return set(sim.stats()["answers"].values()) <= {1}


async def test_a_run_on_ray_writes_what_a_local_run_writes(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    spec = make_spec(tmp_path, 300, simulator.base_url)
    on_ray = await run_in_thread(spec, engine="ray", workers=2, output=str(tmp_path / "ray"))
    assert simulator.stats()["requests"] == 600 and sent_once_each(simulator)
    local = await run_in_thread(spec, output=str(tmp_path / "local"))
    assert (on_ray.rows_ok, on_ray.rows_error, on_ray.requests_sent) == (600, 0, 600)
    assert on_ray.stop_reason == local.stop_reason == "completed"
    assert on_ray.cost_usd == pytest.approx(local.cost_usd)
    assert on_ray.labels == local.labels
    ours, theirs = (
        batchchat.read_results(tmp_path / name).drop(RUN_COLUMNS).sort("row_index", "sample")
        for name in ("ray", "local")
    )
    assert_frame_equal(ours, theirs)  # the same columns, types and values, row for row
    assert ours["row_id"].to_list()[:4] == ["0", "0", "1", "1"]
    assert (tmp_path / "ray" / "report.json").is_file()
    status = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "batchchat", "status", str(tmp_path / "ray")
    )
    assert await status.wait() == 0  # 0: complete, every row ok


def test_a_run_on_ray_starts_its_own_simulator_as_a_local_run_does(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, 40, "simulator", latency={"mean_ms": 5})
    report = batchchat.run(spec, engine="ray", workers=1)
    assert (report.rows_ok, report.requests_sent) == (80, 80)


async def test_a_rerun_on_either_engine_sends_only_what_is_not_done(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    spec = make_spec(tmp_path, 120, simulator.base_url)
    await run_in_thread(spec, limit=50)  # locally: rows 0-49, both samples
    assert simulator.stats()["requests"] == 100
    second = await run_in_thread(spec, engine="ray", workers=2)
    assert simulator.stats()["requests"] == 240 and sent_once_each(simulator)
    assert (second.rows_skipped, second.requests_sent, second.rows_ok) == (100, 240, 240)
    third = await run_in_thread(spec)  # locally again: nothing left
    assert simulator.stats()["requests"] == 240
    assert (third.rows_skipped, third.rows_ok) == (240, 240)
    rows = batchchat.read_results(tmp_path / "out")
    assert rows.height == 240 and rows.select("row_id", "sample").is_unique().all()


def test_a_run_on_ray_stops_for_the_budget_like_a_local_run(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, 400, "simulator", latency={"mean_ms": 20})
    spec["budget"] = {"max_cost_usd": 0.0005}
    spec["pricing"] = {"gpt-4o-mini": {"input": 1.0, "output": 1.0}}
    report = batchchat.run(spec, engine="ray", workers=2)
    assert report.stop_reason == "budget"
    assert 0 < report.requests_sent < 800
    assert report.cost_usd <= 0.0005


async def test_a_killed_ray_run_loses_nothing_written_and_resumes_on_either_engine(
    tmp_path: Path, simulator_factory: SimulatorFactory
) -> None:
    sim = await simulator_factory(latency={"mean_ms": 50})
    spec = make_spec(tmp_path, 400, sim.base_url)
    spec["limits"] = {"max_concurrency": 8}  # ~160 answers a second: several seconds in all
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(spec))
    # its own Ray (started by the run, in the run's session): the kill takes all of it
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    run = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "batchchat", "run", str(job), "--engine", "ray", "-q"],
        env=env,
        start_new_session=True,
        cwd=tmp_path,
    )
    results = tmp_path / "out" / "results"
    deadline = time.monotonic() + 120
    # the results are files another process writes: there is nothing to wait on but them
    while _written(results) < 100 and run.returncode is None and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    os.killpg(run.pid, signal.SIGKILL)  # the driver, its Ray and every worker, at once
    await run.wait()
    written = batchchat.read_results(tmp_path / "out")
    assert 100 <= written.height < 800 and set(written["status"]) == {"ok"}
    assert await _stops_sending(sim), "workers went on sending after their driver was killed"
    (killed,) = load_stats(tmp_path / "out")  # its counters, saved while it ran
    assert killed.finished_at is None and killed.requests_sent > 0
    sim.reset_stats()

    again = await run_in_thread(load_spec(job), engine="ray", workers=2)  # resumes on Ray
    assert again.rows_skipped >= written.height
    assert sim.stats()["requests"] == 800 - again.rows_skipped
    assert not set(sim.stats()["answers"]) & _keys_of(written)  # nothing ok was sent again
    last = await run_in_thread(load_spec(job))  # and locally: nothing left to send
    assert (last.rows_skipped, last.rows_ok) == (800, 800)
    assert sim.stats()["requests"] == 800 - again.rows_skipped
    rows = batchchat.read_results(tmp_path / "out")
    assert rows.height == 800 and rows.select("row_id", "sample").is_unique().all()
    assert set(rows["status"]) == {"ok"}


async def _stops_sending(sim: SimulatorServer, within_s: float = 5.0) -> bool:
    """Whether the server hears no new request for half a second, within ``within_s``
    (a killed driver's workers outlive it until they hear its writer refuse)."""
    deadline = time.monotonic() + within_s
    seen = sim.stats()["requests"]
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        if sim.stats()["requests"] == seen:
            return True
        seen = sim.stats()["requests"]
    return False


def _keys_of(rows: pl.DataFrame) -> set[str]:
    """The simulator's answer keys of result rows (what their requests were)."""
    return {
        key_of(
            {
                "model": "gpt-4o-mini",
                "seed": seed,
                "messages": [{"role": "user", "content": f"{int(rid) % 5} stars: review {rid}"}],
            }
        )
        for rid, seed in rows.select("row_id", "seed").iter_rows()
    }


def _written(results: Path) -> int:
    if not results.is_dir():
        return 0
    try:
        return sum(
            pl.read_parquet(s).height if isinstance(s, Path) else s.height for s in sources(results)
        )
    except (OSError, pl.exceptions.PolarsError):
        return 0  # a part being written


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"cache": True}, "cache: the response cache"),
        ({"mode": "batch"}, "mode: batch: the Batch API"),
        (
            {"endpoints": [{"name": "a", "base_url": "simulator"}], "endpoint": None},
            "endpoints: a pool of endpoints",
        ),
    ],
)
def test_what_a_run_on_ray_does_not_do_is_refused_before_anything_is_sent(
    tmp_path: Path, change: dict[str, Any], said: str
) -> None:
    spec = {**make_spec(tmp_path, 10, "simulator"), **change}
    spec = {key: value for key, value in spec.items() if value is not None}
    with pytest.raises(SpecError, match=rf"cannot run on Ray[\s\S]*{said}"):
        batchchat.run(spec, engine="ray", workers=1)
    assert not (tmp_path / "out").exists()


def test_a_workers_counters_that_come_late_never_replace_newer_ones() -> None:
    from datetime import UTC, datetime

    from batchchat.cluster.engine import Tally
    from batchchat.models import ExecutionStats
    from batchchat.results.runstats import stats_to_dict

    began = datetime.now(UTC)
    tally = Tally(ExecutionStats(run_id="r", started_at=began))

    def counters(sent: int, ok: int) -> dict[str, Any]:
        return stats_to_dict(
            ExecutionStats(run_id="r", started_at=began, requests_sent=sent, results_ok=ok)
        )

    tally.update("a", counters(10, 8))
    tally.update("b", counters(5, 5))
    tally.update("a", counters(6, 6))  # an older report of "a", arriving after
    assert (tally.stats.requests_sent, tally.stats.results_ok) == (15, 13)
    tally.update("a", counters(12, 12))
    assert (tally.stats.requests_sent, tally.stats.results_ok) == (17, 17)
