"""The Ray engine against servers we did not write: llama-server and LiteLLM's rate limit.

Each run is ``batchchat run job.yaml --engine ray --workers 2`` in a subprocess (its own
local Ray), then the output is read as a user reads it. Needs the ``ray`` extra.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests._system import ray_installed
from tests.realserver import _jobs as jobs
from tests.realserver._servers import Server
from tests.realserver.test_rate_limits import (
    MODEL,
    WINDOW_S,
    configured_rpm,
    start_of_a_fresh_minute,
)

pytestmark = pytest.mark.realserver

ON_RAY = ("--engine", "ray", "--workers", "2")
#: what differs between two runs of the same rows (and cached_tokens: llama-server's
#: prompt cache depends on what it was asked before, not on who asks)
RUN_COLUMNS = [
    "run_id",
    "response_id",
    "started_at",
    "finished_at",
    "latency_ms",
    "attempts",
    "cached_tokens",
    "cost_usd",
]


def test_a_run_on_ray_answers_as_a_local_run_and_a_local_rerun_sends_nothing(
    tmp_path: Path, llama: Server
) -> None:
    ray_installed()
    name = jobs.write_input(tmp_path, jobs.prompts(60, "Review {i}: fine, I guess."), "parquet")
    spec = jobs.job_spec(llama, name, samples=2, seed={"base": 3, "per_row": True})
    on_ray = jobs.run(tmp_path, spec, *ON_RAY)
    assert on_ray.code == 0, on_ray.out[-2000:]
    local = jobs.run(tmp_path, spec, "--output", str(tmp_path / "out-local"))
    assert local.code == 0, local.out[-2000:]
    ours, theirs = (
        jobs.results(tmp_path, out).drop(RUN_COLUMNS).sort("row_id", "sample")
        for out in ("out", "out-local")
    )
    assert ours.height == 120 and (ours["status"] == "ok").all()
    assert ours.equals(theirs)  # the same answers, columns and types
    again = jobs.run(tmp_path, spec)  # locally, into the Ray run's directory
    assert again.code == 0, again.out[-2000:]
    report = jobs.report(tmp_path)
    assert report["requests"]["sent"] == 120 and report["rows"]["skipped"] == 120


def test_ray_workers_keep_to_a_gateway_limit_they_learn_from_it(
    tmp_path: Path, litellm: Server
) -> None:
    ray_installed()
    per_window = configured_rpm() - 1
    rows = 2 * per_window
    spec = jobs.job_spec(litellm, jobs.write_input(tmp_path, jobs.prompts(rows)))
    spec["request"]["model"] = MODEL
    offset = start_of_a_fresh_minute()
    run = jobs.run(tmp_path, spec, *ON_RAY, key=litellm.key, timeout=900)
    ideal = (math.ceil(rows / per_window) - 1) * WINDOW_S - offset
    df = jobs.results(tmp_path)
    report = jobs.report(tmp_path)
    late_429 = sum(p["rate_limited"] for p in report["timeline"]["points"] if p["t_s"] >= ideal)
    print(
        f"exit {run.code}; {rows} rows: {(df['status'] == 'ok').sum()} ok; wall {run.wall_s:.1f} s"
        f" vs ideal {ideal:.1f} s; requests {report['requests']}; late 429s {late_429}"
    )
    assert run.code == 0, run.out[-2000:]
    assert df.height == rows and (df["status"] == "ok").all()
    assert late_429 <= 2, f"{late_429} 429s after the first window: the workers did not share"
    assert run.wall_s <= 1.1 * ideal + 20  # + a local Ray's start-up
