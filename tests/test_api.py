"""The Python API: run (also inside a running loop), validate, plan; the job compiled once."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import orjson
import polars as pl
import pytest

import batchchat
from batchchat.planning.compile import compile_request
from batchchat.planning.source import file_schema

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "jobs" / "quickstart.yaml"


def count_calls(functions: list[Callable[..., Any]], action: Callable[[], object]) -> Counter[str]:
    """How often each of ``functions`` runs during ``action`` (a profiler hook, no patching)."""
    codes = {function.__code__: function.__qualname__ for function in functions}
    counts: Counter[str] = Counter()

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code in codes:
            counts[codes[frame.f_code]] += 1

    threading.setprofile(profile)  # type: ignore[arg-type]
    sys.setprofile(profile)  # type: ignore[arg-type]
    try:
        action()
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
    return counts


def test_a_run_reads_the_input_schema_once_and_compiles_the_request_once(tmp_path: Path) -> None:
    def run() -> None:
        report = batchchat.run(QUICKSTART, output=str(tmp_path / "out"))
        assert report.rows_ok == 200

    counts = count_calls([file_schema, compile_request], run)
    assert counts == {"file_schema": 1, "compile_request": 1}


async def test_run_works_inside_a_running_event_loop(tmp_path: Path) -> None:
    # what a Jupyter cell does: the loop is running, and run() is called without await
    assert asyncio.get_running_loop().is_running()
    report = batchchat.run(QUICKSTART, limit=20, output=str(tmp_path / "out"))
    assert (report.rows_ok, report.rows_error, report.stop_reason) == (20, 0, "completed")
    assert batchchat.read_results(tmp_path / "out").height == 20


def test_validate_returns_no_problems_for_a_good_job() -> None:
    assert batchchat.validate(QUICKSTART) == []


def test_validate_returns_every_problem(tmp_path: Path) -> None:
    rows = [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(orjson.dumps(row) for row in rows))
    spec = {
        "input": {"path": str(tmp_path / "in.jsonl"), "id_column": "id"},
        "request": {"model": "m", "messages": [{"role": "user", "content": "{{ txt }}"}]},
        "output": {"keep_columns": ["stars"]},
    }
    problems = batchchat.validate(spec)
    assert len(problems) == 3, problems
    assert any("column 'txt' does not exist" in problem for problem in problems)
    assert any("column 'stars' does not exist" in problem for problem in problems)
    assert any("'a' occurs 2 times" in problem for problem in problems)


def test_plan_counts_what_the_cli_prints_and_writes_batch_lines(tmp_path: Path) -> None:
    estimate = batchchat.plan(QUICKSTART, limit=50, batch_file=tmp_path / "batch.jsonl")
    assert (estimate.rows, estimate.requests) == (50, 50)
    assert estimate.max_output_tokens == 50 * 4
    assert 0 < estimate.cost_low_usd < estimate.cost_high_usd
    lines = pl.read_ndjson(tmp_path / "batch.jsonl")
    assert lines.height == 50
    assert lines["custom_id"].to_list()[:2] == ["rev-0001#0", "rev-0002#0"]


def test_an_unknown_keyword_is_a_spec_error() -> None:
    with pytest.raises(batchchat.BatchchatError, match="unknown override"):
        batchchat.plan(QUICKSTART, limt=5)
