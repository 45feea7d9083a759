"""The response cache in real runs: over HTTP to the simulator, real files, a real SQLite file.

The acceptance of the cache: the same deterministic job into a second output directory
sends nothing and writes the same results; a sampling request is not served unless the
spec says so; two jobs filling one cache at once corrupt nothing; a full cache evicts.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import batchchat
from batchchat.cache.store import ResponseStore
from batchchat.runner import RunOptions, run_job
from batchchat.simulator import SimulatorServer
from batchchat.spec import JobSpec, load_spec
from batchchat.spec.cache import CACHE_FILE
from tests._specs import merge_sections
from tests.test_runner import write_rows

#: columns that describe a run, not an answer: they differ between two runs by design
RUN_COLUMNS = {
    "started_at",
    "finished_at",
    "run_id",
    "latency_ms",
    "attempts",
    "http_status",
    "response_id",
    "cost_usd",
    "cached",
    "cost_saved_usd",
}


def cached_job(tmp_path: Path, base_url: str, out: str, rows: int = 40, **extra: Any) -> JobSpec:
    data = tmp_path / "rows.jsonl"
    if not data.exists():
        write_rows(data, rows)
    spec: dict[str, Any] = {
        "name": "cached",
        "input": {"path": str(data), "id_column": "id"},
        "endpoint": {"base_url": base_url, "timeout_s": 10},
        "request": {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "Answer with one of: positive, negative, neutral"},
                {"role": "user", "content": "{{ text }}"},
            ],
            "temperature": 0,
            "max_tokens": 4,
            "logprobs": True,
            "top_logprobs": 3,
        },
        "output": {
            "path": str(tmp_path / out),
            "keep_columns": ["text"],
            "labels": ["positive", "negative", "neutral"],
        },
        "cache": {"path": str(tmp_path / "cache")},
        "limits": {"max_concurrency": 32},
    }
    merge_sections(spec, extra)
    return load_spec(spec)


def answers(out: Path) -> pl.DataFrame:
    rows = batchchat.read_results(out).sort("row_id")
    return rows.drop([c for c in rows.columns if c in RUN_COLUMNS])


async def test_the_same_job_into_a_second_directory_sends_nothing(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    first = await run_job(cached_job(tmp_path, simulator.base_url, "first", rows=2000))
    sent = simulator.stats()["requests"]
    second = await run_job(cached_job(tmp_path, simulator.base_url, "second"))

    assert sent == 2000
    assert simulator.stats()["requests"] == sent  # not one request more
    assert second.stats.requests_sent == 0
    assert (second.stats.cache_hits, second.report.rows_ok) == (2000, 2000)
    assert answers(tmp_path / "second").equals(answers(tmp_path / "first"))
    rows = batchchat.read_results(tmp_path / "second")
    assert rows["cached"].all() and (rows["cost_usd"] == 0).all()
    assert second.report.cache == {
        "hits": 2000,
        "saved_usd": pytest.approx(first.report.cost_usd, rel=1e-9),
        "unpriced": 0,
    }
    assert second.report.cost_usd == 0.0
    assert second.stats.cache_saved_usd == pytest.approx(first.report.cost_usd)
    assert first.stats.cache_stored > 0
    with ResponseStore(tmp_path / "cache") as store:
        info = store.info()
    assert info.hits == 2000
    report = (tmp_path / "second" / "report.md").read_text()
    assert "| From the cache (cost saved) | 2,000 ($0.0" in report


async def test_a_sampling_request_is_sent_unless_the_spec_widens_the_cache(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    sampling = {"temperature": 1.0}
    await run_job(cached_job(tmp_path, simulator.base_url, "a", request=sampling))
    before = simulator.stats()["requests"]
    again = await run_job(cached_job(tmp_path, simulator.base_url, "b", request=sampling))
    assert simulator.stats()["requests"] == before + 40  # nothing stored, nothing served
    assert again.stats.cache_hits == 0

    wide = {"serve": "any"}
    await run_job(cached_job(tmp_path, simulator.base_url, "c", request=sampling, cache=wide))
    before = simulator.stats()["requests"]
    served = await run_job(
        cached_job(tmp_path, simulator.base_url, "d", request=sampling, cache=wide)
    )
    assert simulator.stats()["requests"] == before
    assert served.stats.cache_hits == 40


async def test_a_seed_makes_a_sampling_request_deterministic(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    seeded: dict[str, Any] = {"request": {"temperature": 0.7}, "seed": {"base": 3, "per_row": True}}
    await run_job(cached_job(tmp_path, simulator.base_url, "a", **seeded))
    second = await run_job(cached_job(tmp_path, simulator.base_url, "b", **seeded))
    assert second.stats.cache_hits == 40


async def test_a_cache_over_its_limit_evicts(simulator: SimulatorServer, tmp_path: Path) -> None:
    small = {"max_size_mb": 0.01}  # ~10 KB: a few dozen answers with logprobs
    await run_job(cached_job(tmp_path, simulator.base_url, "a", rows=200, cache=small))
    with ResponseStore(tmp_path / "cache") as store:
        info = store.info()
    assert info.evicted > 0
    assert info.stored_bytes <= 0.01 * 1024 * 1024
    assert 0 < info.entries < 200
    second = await run_job(cached_job(tmp_path, simulator.base_url, "b", cache=small))
    assert 0 < second.stats.cache_hits < 200


async def test_read_only_serves_and_adds_nothing(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    await run_job(cached_job(tmp_path, simulator.base_url, "a", rows=10))
    write_rows(tmp_path / "rows.jsonl", 20)  # ten new rows
    ro = {"mode": "read-only"}
    outcome = await run_job(cached_job(tmp_path, simulator.base_url, "b", cache=ro))
    assert (outcome.stats.cache_hits, outcome.stats.requests_sent) == (10, 10)
    with ResponseStore(tmp_path / "cache") as store:
        assert store.info().entries == 10


async def test_a_rehearsal_neither_reads_nor_fills_the_cache(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    warnings: list[str] = []
    spec = cached_job(tmp_path, simulator.base_url, "a")
    await run_job(spec, RunOptions(dry_run=True, on_warning=warnings.append))
    assert "cache: not used by a --dry-run" in " ".join(warnings)
    assert not (tmp_path / "cache").exists()


async def test_a_damaged_cache_costs_nothing_but_a_warning(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / CACHE_FILE).write_bytes(b"\x00garbage" * 500)
    warnings: list[str] = []
    outcome = await run_job(
        cached_job(tmp_path, simulator.base_url, "a"), RunOptions(on_warning=warnings.append)
    )
    assert outcome.exit_code == 0 and outcome.report.rows_ok == 40
    assert any("this run goes on without it" in w for w in warnings)


async def test_a_resumed_directory_keeps_one_schema_when_the_cache_is_turned_on(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    spec = cached_job(tmp_path, simulator.base_url, "a", rows=10)
    plain = spec.model_copy(update={"cache": None})
    await run_job(plain)
    write_rows(tmp_path / "rows.jsonl", 20)
    outcome = await run_job(spec)
    assert outcome.stats.skipped == 10
    assert batchchat.read_results(tmp_path / "a").height == 20


@pytest.mark.slow
def test_two_jobs_filling_one_cache_at_the_same_time_corrupt_nothing(tmp_path: Path) -> None:
    # each run lasts ~2 s (40 ms answers, 8 at a time) and writes the cache every second
    write_rows(tmp_path / "rows.jsonl", 400)
    jobs = []
    for name, limit in (("one", 400), ("two", 300)):
        spec = tmp_path / f"{name}.yaml"
        spec.write_text(
            f"""
name: {name}
input: {{path: rows.jsonl, id_column: id, limit: {limit}}}
request:
  model: gpt-4o-mini
  messages: [{{role: user, content: "{{{{ text }}}}"}}]
  temperature: 0
  max_tokens: 64
endpoint: {{simulator: {{latency: {{mean_ms: 40}}}}}}
output: {{path: out-{name}}}
cache: {{path: cache}}
limits: {{max_concurrency: 8}}
"""
        )
        jobs.append(spec)
    env = {**os.environ, "COVERAGE_PROCESS_START": os.environ.get("COVERAGE_PROCESS_START", "")}
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "batchchat", "run", str(spec), "-q"],
            cwd=tmp_path,
            env=env,
            stderr=subprocess.PIPE,
        )
        for spec in jobs
    ]
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err.decode()
    db = sqlite3.connect(tmp_path / "cache" / CACHE_FILE)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    (entries,) = db.execute("SELECT count(*) FROM answers").fetchone()
    db.close()
    assert entries == 400  # the 300 rows both jobs sent are stored once each
    third = subprocess.run(
        [sys.executable, "-m", "batchchat", "run", str(jobs[0]), "-q", "-o", "out-three"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert third.returncode == 0, third.stderr.decode()
    rows = batchchat.read_results(tmp_path / "out-three")
    assert rows.height == 400 and rows["cached"].all()
