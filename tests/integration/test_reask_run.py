"""Re-asks in real runs: the simulator answers wrong for a share of requests, over HTTP.

The acceptance of re-asks: every row ends parsed, or with an honest final parse status
after the re-asks it was allowed; the re-asks and their cost are in each row, in the
run's counters and in the report, apart from transport retries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest

import batchchat
from batchchat.runner import run_job
from batchchat.spec import JobSpec, load_spec
from tests._specs import merge_sections
from tests.conftest import SimulatorFactory
from tests.test_runner import write_rows

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["sentiment", "stars"],
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "stars": {"type": "integer", "minimum": 1, "maximum": 5},
    },
}


def extraction_job(tmp_path: Path, base_url: str, rows: int = 120, **extra: Any) -> JobSpec:
    data = write_rows(tmp_path / "rows.jsonl", rows)
    spec: dict[str, Any] = {
        "name": "extract",
        "input": {"path": str(data), "id_column": "id"},
        "endpoint": {"base_url": base_url, "timeout_s": 10},
        "request": {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "Extract the facts. Reply with JSON only."},
                {"role": "user", "content": "{{ text }}"},
            ],
            "temperature": 0,
            "max_completion_tokens": 60,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "facts", "strict": True, "schema": SCHEMA},
            },
        },
        "output": {"path": str(tmp_path / "out"), "parse": "json", "reask": 2},
        "pricing": {"gpt-4o-mini": {"input": 0.15, "output": 0.60}},
        "retry": {"max_attempts": 6, "max_wait_s": 0.05, "initial_wait_s": 0.01},
    }
    merge_sections(spec, extra)
    return load_spec(spec)


async def test_every_row_ends_parsed_or_with_an_honest_parse_error(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    sim = await simulator_factory(
        faults={"invalid_json": 0.3, "schema_mismatch": 0.15, "http_500": 0.05, "seed": 4}
    )
    outcome = await run_job(extraction_job(tmp_path, sim.base_url))
    rows = batchchat.read_results(tmp_path / "out")

    assert rows.height == 120 and (rows["status"] == "ok").all()
    parsed = rows.filter(pl.col("parse_status") == "ok")
    failing = rows.filter(pl.col("parse_status") != "ok")
    assert parsed["parsed"].is_not_null().all() and parsed["parse_error"].is_null().all()
    assert failing.height > 0  # with ~45 % wrong answers, some rows use up their re-asks
    assert (failing["reasks"] == 2).all()  # ... and only those end unparsed
    assert failing["parse_error"].is_not_null().all()
    assert set(failing["parse_status"]) <= {"invalid_json", "schema_mismatch"}
    fixed = parsed.filter(pl.col("reasks") > 0)
    assert fixed.height > 0

    # each row: one cost per answer, the row's cost their sum
    asked = rows.filter(pl.col("reasks") > 0)
    assert (asked["ask_costs_usd"].list.len() == asked["reasks"] + 1).all()
    sums = asked["ask_costs_usd"].list.sum() - asked["cost_usd"]
    assert sums.abs().max() < 1e-12  # type: ignore[operator]

    # the run's counters: re-asks apart from retries, and what the server saw
    stats = outcome.stats
    assert stats.reasks == rows["reasks"].sum()
    faults = sim.stats()["faults"]
    assert stats.retries == faults.get("http_500", 0)
    assert stats.requests_sent == 120 + stats.reasks + stats.retries
    reask_cost = (asked["ask_costs_usd"].list.sum() - asked["ask_costs_usd"].list.first()).sum()
    assert stats.reask_cost_usd == pytest.approx(reask_cost)

    # the report
    report = outcome.report
    assert report.reasks == {
        "rows": asked.height,
        "reasks": stats.reasks,
        "cost_usd": pytest.approx(reask_cost, rel=1e-9),
        "fixed": fixed.height,
        "still_failing": failing.height,
    }
    assert report.cost_usd == pytest.approx(rows["cost_usd"].sum(), rel=1e-9)
    assert report.parse_status["ok"] == parsed.height
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert f"| Re-asks (rows · cost) | {stats.reasks} ({asked.height} rows" in markdown
    assert "## Parse status" in markdown


async def test_without_reasks_a_wrong_answer_is_a_parse_error_at_once(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    sim = await simulator_factory(faults={"invalid_json": 0.5, "seed": 2})
    spec = extraction_job(tmp_path, sim.base_url, rows=40, output={"reask": None})
    outcome = await run_job(spec)
    rows = batchchat.read_results(tmp_path / "out")
    assert outcome.stats.reasks == 0 and outcome.report.reasks is None
    assert (rows["reasks"] == 0).all() and rows["ask_costs_usd"].is_null().all()
    assert (rows.filter(pl.col("parse_status") == "invalid_json").height) > 0
    assert sim.stats()["requests"] == 40


async def test_off_label_answers_are_asked_again(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    sim = await simulator_factory(faults={"off_label": 0.4, "seed": 9})
    data = write_rows(tmp_path / "rows.jsonl", 60)
    spec = load_spec(
        {
            "name": "labels",
            "input": {"path": str(data), "id_column": "id"},
            "endpoint": {"base_url": sim.base_url},
            "request": {
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": "Answer with one of: yes, no"},
                    {"role": "user", "content": "{{ text }}"},
                ],
                "temperature": 0,
                "max_tokens": 8,
            },
            "output": {"path": str(tmp_path / "out"), "labels": ["yes", "no"], "reask": 3},
        }
    )
    outcome = await run_job(spec)
    rows = batchchat.read_results(tmp_path / "out")
    unmatched = rows.filter(pl.col("label").is_null())
    assert outcome.stats.reasks > 0
    assert (unmatched["reasks"] == 3).all()
    assert (unmatched["parse_status"] == "off_label").all()
    assert rows.filter(pl.col("label").is_not_null())["parse_status"].to_list() == ["ok"] * (
        60 - unmatched.height
    )
    assert outcome.report.labels is not None
    assert outcome.report.labels["unmatched"] == unmatched.height


async def test_the_cache_keeps_the_answer_the_reasks_reached(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    sim = await simulator_factory(faults={"invalid_json": 0.4, "seed": 1})
    cache = {"cache": {"path": str(tmp_path / "cache")}}
    first = await run_job(extraction_job(tmp_path, sim.base_url, rows=50, **cache))
    first_rows = batchchat.read_results(tmp_path / "out").sort("row_id")
    before = sim.stats()["requests"]

    def again(out: str, reask: int) -> JobSpec:
        output = {"path": str(tmp_path / out), "reask": reask}
        return extraction_job(tmp_path, sim.base_url, rows=50, output=output, **cache)

    second = await run_job(again("again", 2))
    # every row is served: the parsed ones, and the ones whose re-asks were all used up
    # (asking a deterministic request the same again would only pay for the same answers)
    assert (second.stats.cache_hits, second.stats.requests_sent) == (50, 0)
    assert sim.stats()["requests"] == before
    served = batchchat.read_results(tmp_path / "again").sort("row_id")
    assert served["parse_status"].to_list() == first_rows["parse_status"].to_list()
    assert served["content"].to_list() == first_rows["content"].to_list()
    assert (served["reasks"] == 0).all() and served["ask_costs_usd"].is_null().all()
    still_failing = first.report.reasks["still_failing"] if first.report.reasks else 0
    assert still_failing > 0

    # a job that would re-ask more sends the rows still failing again; the rest are served
    third = await run_job(again("more", 3))
    assert third.stats.cache_hits == 50 - still_failing
    assert sim.stats()["requests"] - before == third.stats.requests_sent > 0
