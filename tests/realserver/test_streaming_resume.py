"""Streaming and load against llama-server, with the requests it handled counted from its
``/metrics``: streamed rows against the raw non-streamed answers, 2,000 streamed rows at
concurrency 32, and a run SIGKILLed after 2 s then resumed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests.realserver import _jobs as jobs
from tests.realserver._compare import differences, raw_by_id, raw_view, result_view, split
from tests.realserver._servers import ServedRequests, Server

pytestmark = pytest.mark.realserver

SAME_PROMPT = "Tell me something, please."  # one prompt length for every row: see ServedRequests


def seeded_job(server: Server, folder: Path, rows: int, **sections: Any) -> dict[str, Any]:
    name = jobs.write_input(folder, jobs.prompts(rows, SAME_PROMPT))
    spec = jobs.job_spec(server, name, **sections)
    spec["request"] |= {"temperature": 1.0}
    spec["seed"] = {"base": 11, "per_row": True}
    return spec


def test_streamed_results_equal_the_raw_non_streamed_answers(tmp_path: Path, llama: Server) -> None:
    spec = seeded_job(llama, tmp_path, 60, request={"stream": True}, limits={"max_concurrency": 4})
    bodies = jobs.planned_bodies(tmp_path, spec)
    run = jobs.run(tmp_path, spec)
    assert run.code == 0, run.out[-2000:]
    df = jobs.results(tmp_path)
    assert (df["status"] == "ok").all()
    got_text, got_usage = split(result_view(df))
    raw_text, raw_usage = split(raw_view(raw_by_id(llama, bodies, stream=False)))
    text, usage = differences(got_text, raw_text), differences(got_usage, raw_usage)
    assert not (text or usage), (
        f"content, finish_reason: {text or 'same'}\nusage: {usage or 'same'}"
    )


def test_2000_streamed_rows_at_concurrency_32_need_one_attempt_each(
    tmp_path: Path, llama: Server
) -> None:
    spec = seeded_job(
        llama, tmp_path, 2000, request={"stream": True}, limits={"max_concurrency": 32}
    )
    body = next(iter(jobs.planned_bodies(tmp_path, spec).values()))
    with ServedRequests(llama, body) as served:
        run = jobs.run(tmp_path, spec)
    df = jobs.results(tmp_path)
    sent = jobs.report(tmp_path)["requests"]
    print(f"exit {run.code}, {run.wall_s:.1f} s, server handled {served.count:.0f}, {sent}")
    assert run.code == 0, run.out[-2000:]
    assert df.height == 2000 and (df["status"] == "ok").all()
    retried = df.filter(pl.col("attempts") > 1)
    assert retried.height == 0, f"{retried.height} rows needed >1 attempt; {sent}"


def test_kill_after_2s_then_resume_sends_each_row_about_once(tmp_path: Path, llama: Server) -> None:
    concurrency = 16  # 500 rows at 100/s: the kill comes mid-run
    spec = seeded_job(llama, tmp_path, 500, limits={"max_concurrency": concurrency, "rpm": 6000})
    body = next(iter(jobs.planned_bodies(tmp_path, spec).values()))
    with ServedRequests(llama, body) as served:
        killed = jobs.run_and_kill(tmp_path, spec, after_s=2.0)
        run = jobs.run(tmp_path, spec)
    assert killed == -9, "the run ended before the kill: make it longer"
    assert run.code == 0, run.out[-2000:]
    ok = jobs.results(tmp_path).filter(pl.col("status") == "ok")
    kept = ok.group_by("run_id").len().sort("len")["len"].to_list()
    print(f"killed, then resumed: ok rows per run {kept}; server handled {served.count:.0f}")
    per_id = ok.group_by("row_id").len()
    assert per_id.height == 500 and (per_id["len"] == 1).all()
    thrown_away = served.count - 500
    assert thrown_away <= concurrency, f"{thrown_away:.0f} answers were thrown away"
