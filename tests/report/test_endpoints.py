"""The report's per-endpoint section of a pool job: from the runs' counters and the results."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime
from pathlib import Path

import orjson
import polars as pl
from rich.console import Console

from batchchat.models import EndpointStats, ExecutionStats
from batchchat.report.build import build_report
from batchchat.report.endpoints import endpoint_reports
from batchchat.report.html import render_html
from batchchat.report.text import render_markdown, render_table
from batchchat.runner import run_job
from batchchat.spec import load_spec
from tests.test_runner import write_rows

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _run(run_id: str, **endpoints: EndpointStats) -> ExecutionStats:
    return ExecutionStats(run_id=run_id, started_at=T0, endpoints=dict(endpoints))


def _rows(*rows: tuple[str, str, float | None, float | None]) -> pl.LazyFrame:
    """(endpoint, status, latency_ms, cost_usd) per result."""
    return pl.LazyFrame(
        [
            {"endpoint": e, "status": s, "latency_ms": lat, "cost_usd": cost}
            for e, s, lat, cost in rows
        ],
        schema={
            "endpoint": pl.String,
            "status": pl.String,
            "latency_ms": pl.Float64,
            "cost_usd": pl.Float64,
        },
    )


def test_counters_add_up_over_runs_and_rows_come_from_the_results() -> None:
    first = _run(
        "r1",
        a=EndpointStats(requests_sent=5, status_counts={200: 3, 503: 1, 0: 1}, cooldowns=1),
        b=EndpointStats(requests_sent=2, rate_limited=2, status_counts={429: 2}),
    )
    second = _run(
        "r2",
        a=EndpointStats(requests_sent=1, status_counts={200: 1}),
        b=EndpointStats(requests_sent=1, status_counts={401: 1}, removed="AuthenticationError"),
    )
    rows = _rows(
        ("a", "ok", 10.0, 0.5),
        ("a", "ok", 20.0, 0.25),
        ("a", "ok", 30.0, None),  # no price known
        ("a", "error", None, None),
        ("b", "error", None, None),
        (None, "error", None, None),  # a row never sent (a template failed on it)
    )
    a, b = endpoint_reports(rows, [first, second])
    assert (a.name, a.requests_sent, a.failed_attempts, a.cooldowns) == ("a", 6, 2, 1)
    assert (a.rows_ok, a.rows_error, a.cost_usd) == (3, 1, 0.75)
    assert (a.p50_ms, a.p90_ms) == (20.0, 30.0)
    assert (b.requests_sent, b.rate_limited, b.failed_attempts) == (3, 2, 1)
    assert (b.rows_ok, b.cost_usd, b.p50_ms, b.removed) == (0, None, None, "AuthenticationError")


def test_a_job_with_one_endpoint_has_no_endpoint_section() -> None:
    rows = _rows((None, "ok", 10.0, 0.1))
    assert endpoint_reports(rows, [_run("r1")]) == []


def test_a_pool_runs_report_shows_every_endpoint_everywhere(tmp_path: Path) -> None:
    data = write_rows(tmp_path / "rows.jsonl", 40)
    members = [
        {
            "name": "main",
            "base_url": "simulator",
            "pricing": {"gpt-4o-mini": {"input": 1, "output": 1}},
        },
        {"name": "flaky", "base_url": "simulator", "simulator": {"faults": {"http_503": 1.0}}},
    ]
    spec = load_spec(
        {
            "input": {"path": str(data), "id_column": "id"},
            "endpoints": members,
            "request": {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "{{ text }}"}],
            },
            "output": {"path": str(tmp_path / "out")},
        }
    )
    outcome = asyncio.run(run_job(spec))
    assert outcome.exit_code == 0
    report = build_report(spec.output_dir)  # rebuilt from the directory alone
    data_json = orjson.loads(report.to_json())
    assert list(data_json["endpoints"]) == ["main", "flaky"]
    main, flaky = data_json["endpoints"]["main"], data_json["endpoints"]["flaky"]
    assert main["rows_ok"] == 40 and main["cost_usd"] > 0 and main["p50_ms"] is not None
    assert flaky["rows_ok"] == 0 and flaky["failed_attempts"] == flaky["requests_sent"] >= 1
    assert flaky["cooldowns"] >= 1
    markdown = render_markdown(report)
    assert "## Endpoints" in markdown and "| main | " in markdown and "| flaky | " in markdown
    html = render_html(report)
    assert "<h2>Endpoints</h2>" in html and "<td>flaky</td>" in html
    console = Console(file=io.StringIO(), width=100, record=True)
    console.print(render_table(report))
    text = console.export_text()
    assert "Endpoints" in text and "flaky" in text and "cooled" in text
