"""Rate limits of a real gateway: LiteLLM's ``mock-gpt-limited`` deployment.

LiteLLM lets ``rpm - 1`` requests through per calendar minute and answers the rest 429 with
no ``retry-after`` (only ``llm_provider-retry-after: 60``). Each test starts at the top of a
fresh minute with two windows' worth of rows, so the ideal wall time is one window (the
second half goes in the next minute). Each takes a minute or two.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.realserver import _jobs as jobs
from tests.realserver._servers import SCRIPTS, Server

pytestmark = pytest.mark.realserver

MODEL = "mock-gpt-limited"
WINDOW_S = 60.0


def configured_rpm() -> int:
    config = yaml.safe_load(Path(f"{SCRIPTS}/litellm/config.yaml").read_text())
    (entry,) = [m for m in config["model_list"] if m["model_name"] == MODEL]
    return int(entry["litellm_params"]["rpm"])


def start_of_a_fresh_minute() -> float:
    """Sleep into the next calendar minute; the seconds already gone in it."""
    time.sleep(WINDOW_S - time.time() % WINDOW_S + 0.5)
    return time.time() % WINDOW_S


def run_limited(folder: Path, server: Server, limits: dict[str, Any]) -> None:
    per_window = configured_rpm() - 1
    rows = 2 * per_window
    spec = jobs.job_spec(server, jobs.write_input(folder, jobs.prompts(rows)), limits=limits)
    spec["request"]["model"] = MODEL
    offset = start_of_a_fresh_minute()
    run = jobs.run(folder, spec, key=server.key, timeout=900)
    ideal = (math.ceil(rows / per_window) - 1) * WINDOW_S - offset
    if limits.get("rpm"):
        # the spec's bucket starts full (the server's window may hold an earlier run's
        # requests), so the first request waits one interval of it: 4 s at rpm 15 here,
        # 0.3 s at the 180 of a real 60-rpm deployment
        ideal += WINDOW_S / limits["rpm"]
    df = jobs.results(folder)
    rep = jobs.report(folder)
    late_429 = sum(p["rate_limited"] for p in rep["timeline"]["points"] if p["t_s"] >= ideal)
    print(
        f"exit {run.code}; {rows} rows: {(df['status'] == 'ok').sum()} ok; wall {run.wall_s:.1f} s "
        f"vs ideal {ideal:.1f} s; requests {rep['requests']}; 429s after the first window "
        f"{late_429}; errors {df['error_type'].drop_nulls().to_list()}"
    )
    assert run.code == 0, run.out[-2000:]
    assert (df["status"] == "ok").all()
    assert late_429 <= 2, f"{late_429} 429s after the first window"
    assert run.wall_s <= 1.1 * ideal, f"wall {run.wall_s:.1f} s, ideal {ideal:.1f} s"


def test_rate_limit_learned_from_the_server_without_rpm(tmp_path: Path, litellm: Server) -> None:
    run_limited(tmp_path, litellm, {})


def test_rate_limit_with_rpm_three_times_too_high(tmp_path: Path, litellm: Server) -> None:
    run_limited(tmp_path, litellm, {"rpm": 3 * configured_rpm()})
