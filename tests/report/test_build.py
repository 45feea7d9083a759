"""The run report, built from result Parquet files and run stats written to a real directory."""

from __future__ import annotations

import io
import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

import batchchat
from batchchat.models import ExecutionStats, TimelineBucket, Usage
from batchchat.pricing import ModelPrice, PriceTable
from batchchat.report.build import build_report, write_reports
from batchchat.report.model import MAX_TIMELINE_POINTS
from batchchat.report.text import render_markdown, render_table, summary_rows
from batchchat.results.ledger import compact_parts, has_repeated_keys
from batchchat.results.runstats import save_stats
from batchchat.spec import load_spec

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

#: the result columns of the sink contract that the report reads (and some it does not)
RESULT_SCHEMA: dict[str, Any] = {
    "row_id": pl.String,
    "sample": pl.Int64,
    "request_hash": pl.String,
    "status": pl.String,
    "error_type": pl.String,
    "error_message": pl.String,
    "http_status": pl.Int64,
    "attempts": pl.Int64,
    "latency_ms": pl.Float64,
    "started_at": pl.Datetime("us", "UTC"),
    "finished_at": pl.Datetime("us", "UTC"),
    "response_id": pl.String,
    "model": pl.String,
    "content": pl.String,
    "finish_reason": pl.String,
    "prompt_tokens": pl.Int64,
    "completion_tokens": pl.Int64,
    "total_tokens": pl.Int64,
    "cached_tokens": pl.Int64,
    "reasoning_tokens": pl.Int64,
    "cost_usd": pl.Float64,
}


def shipped_prices() -> PriceTable:
    """The built-in price table alone (a spec without pricing: of its own)."""
    return PriceTable.from_spec(
        load_spec({"input": {"path": "x"}, "request": {"model": "m", "messages": []}})
    )


def ok_row(
    row_id: str,
    *,
    sample: int = 0,
    model: str | None = "gpt-4o-mini",
    prompt: int | None = 100,
    completion: int | None = 20,
    cached: int | None = 0,
    reasoning: int | None = 0,
    cost: float | None = 0.0001,
    latency: float = 250.0,
    finish: str | None = "stop",
    at: float = 0.0,
) -> dict[str, Any]:
    total = None if prompt is None or completion is None else prompt + completion
    return {
        "row_id": row_id,
        "sample": sample,
        "request_hash": f"h{row_id}",
        "status": "ok",
        "http_status": 200,
        "attempts": 1,
        "latency_ms": latency,
        "started_at": T0 + timedelta(seconds=at),
        "finished_at": T0 + timedelta(seconds=at, milliseconds=latency),
        "response_id": f"chatcmpl-{row_id}",
        "model": model,
        "content": "yes",
        "finish_reason": finish,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total,
        "cached_tokens": cached,
        "reasoning_tokens": reasoning,
        "cost_usd": cost,
    }


def error_row(
    row_id: str,
    error_type: str = "ServerError",
    message: str = "HTTP 500: upstream failed",
    *,
    sample: int = 0,
    at: float = 0.0,
) -> dict[str, Any]:
    return {
        "row_id": row_id,
        "sample": sample,
        "request_hash": f"h{row_id}",
        "status": "error",
        "error_type": error_type,
        "error_message": message,
        "http_status": 500,
        "attempts": 6,
        "latency_ms": 30.0,
        "started_at": T0 + timedelta(seconds=at),
        "finished_at": T0 + timedelta(seconds=at, milliseconds=30),
    }


def write_results(
    out_dir: Path, rows: list[dict[str, Any]], part: int = 0, schema: Any = None
) -> Path:
    """One result part, in the contract's column names and types."""
    path = out_dir / "results" / f"part-{part:05d}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows, schema=schema or RESULT_SCHEMA).write_parquet(path)
    return path


#: the columns of how an answer was come by: re-asks, the cache, the parse status
ASKS_SCHEMA = {
    **RESULT_SCHEMA,
    "reasks": pl.Int64,
    "ask_costs_usd": pl.List(pl.Float64),
    "cached": pl.Boolean,
    "cost_saved_usd": pl.Float64,
    "parse_status": pl.String,
}


def stats(run_id: str = "run-1", seconds: int = 10, **counters: Any) -> ExecutionStats:
    start = counters.pop("started_at", T0)
    finished = counters.pop("finished_at", start + timedelta(seconds=seconds))
    return ExecutionStats(run_id=run_id, started_at=start, finished_at=finished, **counters)


def sample_dir(tmp_path: Path) -> Path:
    """A finished run: 6 ok rows over two models (one unpriced), 3 errors, run stats."""
    out = tmp_path / "out"
    write_results(
        out,
        [
            ok_row("1", model="gpt-4o-mini-2024-07-18", cached=50, cost=0.0000345),
            ok_row("2", model="gpt-4o-mini-2024-07-18", finish="length", cost=0.0000270),
            ok_row("3", model="deepseek-chat", reasoning=5, cost=0.0000364),
            ok_row("4", model="mystery-7b", cost=None),
            ok_row("5", model="mystery-7b", cost=None),
            ok_row("6", model="gpt-4o-mini-2024-07-18", sample=1, cost=0.0000270),
            error_row("7", "RateLimitError", "429 Too Many Requests"),
            error_row("8", "RequestTimeout", "no response headers within 30 s"),
            error_row("9", "RequestTimeout", "no response headers within 30 s"),
        ],
    )
    run = stats(
        requests_sent=14,
        retries=5,
        rate_limited=3,
        status_counts={200: 6, 429: 3, 0: 5},
        results_ok=6,
        results_error=3,
        timeline=[TimelineBucket(second=s, requests=2, rate_limited=s % 2, ok=1) for s in range(7)],
    )
    save_stats(out, run)
    (out / "manifest.json").write_bytes(orjson.dumps({"job": "labels", "fingerprint": "ab" * 32}))
    return out


# -- counts, tokens, cost ----------------------------------------------------------------------


def test_report_counts_rows_requests_tokens_and_cost(tmp_path: Path) -> None:
    report = build_report(sample_dir(tmp_path))

    assert (report.rows_total, report.rows_ok, report.rows_error) == (9, 6, 3)
    assert (report.requests_sent, report.retries, report.rate_limited) == (14, 5, 3)
    assert report.status_counts == {200: 6, 429: 3, 0: 5}
    assert report.tokens.prompt == 600
    assert report.tokens.completion == 120
    assert report.tokens.cached == 50
    assert report.tokens.reasoning == 5
    assert report.tokens.total == 720
    assert report.cost_usd == pytest.approx(0.0000345 + 0.0000270 * 2 + 0.0000364)
    assert report.job == "labels"
    assert report.spec_hash == "ab" * 32
    assert report.run_ids == ["run-1"]
    assert report.stop_reason == "completed"
    assert report.wall_time_s == 10
    assert report.rows_per_s == pytest.approx(0.9)
    assert report.tokens_per_s == pytest.approx(72.0)


def test_unpriced_model_gives_unknown_cost_and_a_warning_never_zero(tmp_path: Path) -> None:
    report = build_report(sample_dir(tmp_path))

    by_model = {m.model: m for m in report.models}
    assert by_model["mystery-7b"].cost_usd is None
    assert by_model["mystery-7b"].unpriced_rows == 2
    assert not by_model["mystery-7b"].priced
    assert by_model["gpt-4o-mini-2024-07-18"].rows == 3
    assert not report.cost_complete
    assert "model mystery-7b has no price: cost unknown for 2 rows" in report.warnings[0]
    assert report.to_dict()["cost"]["by_model"]["mystery-7b"]["cost_usd"] is None


def test_missing_usage_is_reported_apart_from_missing_prices(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_results(out, [ok_row("1"), ok_row("2", prompt=None, completion=None, cost=None)])
    report = build_report(out, prices=shipped_prices())

    assert report.models[0].unpriced_rows == 1
    assert report.warnings == [
        "model gpt-4o-mini: the server reported no usage for 1 rows: cost unknown",
        "no run stats found (runs/*.json): request counts are unknown",
    ]


def test_repricing_uses_the_table_and_the_token_counts(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_results(
        out,
        [
            ok_row("1", model="gpt-4o-mini-2024-07-18", prompt=1000, cached=800, completion=100),
            ok_row("2", model="o4-mini", prompt=500, completion=900, reasoning=700),
            ok_row("3", model="mystery-7b"),
        ],
    )
    report = build_report(out, prices=shipped_prices())

    expected = (200 * 0.15 + 800 * 0.075 + 100 * 0.60 + 500 * 1.10 + 900 * 4.40) / 1e6
    assert report.cost_usd == pytest.approx(expected, rel=1e-12)
    assert report.warnings[0].startswith("model mystery-7b has no price")


def test_samples_and_n_choices_add_up(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # row 1 has 3 samples; each sample's usage already covers its n choices
    rows = [ok_row("1", sample=s, prompt=10, completion=30, cost=0.001) for s in range(3)]
    write_results(out, rows)
    report = build_report(out)

    assert report.rows_total == 3
    assert report.tokens.completion == 90
    assert report.cost_usd == pytest.approx(0.003)


def test_a_row_counts_once_with_its_ok_result(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_results(out, [error_row("1", at=0), error_row("2", "ServerError", "first", at=0)], part=0)
    write_results(
        out,
        [ok_row("1", at=5), error_row("2", "RequestTimeout", "later", at=5)],
        part=1,
    )
    report = build_report(out)

    assert (report.rows_total, report.rows_ok, report.rows_error) == (2, 1, 1)
    assert [(e.error_type, e.sample_message) for e in report.errors] == [
        ("RequestTimeout", "later")
    ]


def test_errors_are_grouped_with_a_sample_message_and_example_ids(tmp_path: Path) -> None:
    report = build_report(sample_dir(tmp_path))

    assert [(e.error_type, e.count) for e in report.errors] == [
        ("RequestTimeout", 2),
        ("RateLimitError", 1),
    ]
    assert report.errors[0].example_row_ids == ["8", "9"]
    assert report.errors[0].sample_message == "no response headers within 30 s"


def test_finish_reasons_and_latency(tmp_path: Path) -> None:
    out = tmp_path / "out"
    rows = [
        ok_row(str(i), latency=float(i), finish="length" if i > 90 else "stop")
        for i in range(1, 102)
    ]
    write_results(out, [*rows, error_row("x")])
    report = build_report(out)

    assert report.finish_reasons == {"stop": 90, "length": 11}
    lat = report.latency
    assert (lat.count, lat.p50, lat.p90, lat.p99, lat.max) == (101, 51.0, 91.0, 100.0, 101.0)
    assert lat.mean == pytest.approx(51.0)
    assert sum(b.count for b in lat.histogram) == 101
    assert lat.histogram[0].lo <= 1.0 and lat.histogram[-1].hi > 101.0


def test_partial_run_without_an_end(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_results(out, [ok_row("1"), ok_row("2")])
    # killed while running: the last periodic save has no finished_at
    run = stats(finished_at=None, requests_sent=5)
    run.timeline = [TimelineBucket(second=s, requests=1) for s in range(4)]
    save_stats(out, run)
    report = build_report(out)

    assert report.stop_reason == "unfinished"
    assert report.rows_ok == 2
    assert report.requests_sent == 5
    assert report.wall_time_s == 4


def test_resumed_runs_add_up(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_results(out, [ok_row(str(i)) for i in range(4)])
    first = stats(
        "run-a", 10, requests_sent=3, retries=1, rate_limited=1, stop_reason="interrupted"
    )
    second = stats("run-b", 5, started_at=T0 + timedelta(hours=1), requests_sent=2, skipped=2)
    first.timeline = [TimelineBucket(second=0, requests=3)]
    second.timeline = [TimelineBucket(second=1, requests=2)]
    save_stats(out, second)
    save_stats(out, first)
    report = build_report(out)

    assert report.run_ids == ["run-a", "run-b"]
    assert (report.requests_sent, report.retries, report.rate_limited) == (5, 1, 1)
    assert report.rows_skipped == 2
    assert report.stop_reason == "completed"
    assert report.wall_time_s == 15
    assert report.timeline.run_starts_s == [0.0, 10.0]
    assert [p.requests for p in report.timeline.points if p.requests] == [3, 2]


def test_long_timelines_are_merged_into_buckets(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_results(out, [ok_row("1")])
    run = stats(seconds=3000)
    run.timeline = [TimelineBucket(second=s, requests=1, tokens=10) for s in range(3000)]
    save_stats(out, run)
    timeline = build_report(out).timeline

    assert len(timeline.points) <= MAX_TIMELINE_POINTS
    assert timeline.bucket_s == 10
    assert sum(p.requests for p in timeline.points) == 3000
    assert timeline.points[1].t_s == 10


def test_an_empty_output_directory(tmp_path: Path) -> None:
    report = build_report(tmp_path)

    assert (report.rows_total, report.cost_usd, report.latency.p50) == (0, 0.0, None)
    assert report.models == [] and report.errors == [] and report.warnings == []
    render_markdown(report)  # renders without figures


# -- the stable JSON ---------------------------------------------------------------------------


def test_report_json_keys_are_stable(tmp_path: Path) -> None:
    data = orjson.loads(build_report(sample_dir(tmp_path)).to_json())

    assert set(data) == {
        "schema_version", "job", "output_dir", "batchchat_version", "spec_hash", "run_ids",
        "stop_reason", "started_at", "finished_at", "wall_time_s", "rows", "requests", "tokens",
        "cost", "finish_reasons", "errors", "latency_ms", "throughput", "timeline", "warnings",
        "labels", "input_issues", "batches", "cache", "reasks", "parse_status",
    }  # fmt: skip
    assert data["labels"] is None  # not a labeling job
    assert data["rows"] == {"total": 9, "ok": 6, "error": 3, "skipped": 0, "samples_per_row": 1}
    assert data["requests"] == {
        "sent": 14,
        "retries": 5,
        "rate_limited": 3,
        "by_status": {"0": 5, "200": 6, "429": 3},
    }
    assert set(data["tokens"]) == {"prompt", "cached", "completion", "reasoning", "total"}
    assert set(data["cost"]) == {"total_usd", "complete", "by_model"}
    assert set(data["cost"]["by_model"]["deepseek-chat"]) == {
        "rows", "tokens", "cost_usd", "unpriced_rows", "priced",
    }  # fmt: skip
    assert data["errors"]["by_type"]["RequestTimeout"] == {
        "count": 2,
        "sample_message": "no response headers within 30 s",
        "example_row_ids": ["8", "9"],
    }
    assert set(data["latency_ms"]) == {"count", "p50", "p90", "p99", "mean", "max", "histogram"}
    assert set(data["throughput"]) == {"rows_per_s", "tokens_per_s"}
    assert data["batchchat_version"] != "unknown"


def test_write_reports_writes_three_files(tmp_path: Path) -> None:
    out = sample_dir(tmp_path)
    report = build_report(out)
    write_reports(out, report)

    assert orjson.loads((out / "report.json").read_bytes()) == orjson.loads(report.to_json())
    assert (out / "report.md").read_text().startswith("# Run report: labels")
    assert "<svg" in (out / "report.html").read_text()
    assert not list(out.glob(".*.tmp"))


# -- Markdown and the terminal table -----------------------------------------------------------


def test_markdown_has_the_tables_and_the_five_most_common_errors(tmp_path: Path) -> None:
    out = tmp_path / "out"
    errors = [
        error_row(f"{kind}-{i}", f"Error{kind}", f"failure {kind} | <b>bold</b>")
        for kind in range(7)
        for i in range(kind + 1)
    ]
    write_results(out, [ok_row("ok-1"), ok_row("ok-2", model="mystery-7b", cost=None), *errors])
    text = render_markdown(build_report(out))

    assert "| Rows | 30 |" in text
    assert "| Errors | 28 |" in text
    assert "## Most common errors (28 rows)" in text
    assert "| `Error6` | 7 | `6-0`, `6-1`, `6-2`, `6-3`, `6-4` |" in text
    assert "`Error2`" in text and "`Error1`" not in text  # only the five most common
    assert "…and 2 more error types in report.json." in text
    assert "failure 6 \\| &lt;b&gt;bold&lt;/b&gt;" in text  # cannot break the table
    assert "- model mystery-7b has no price: cost unknown for 1 rows" in text
    assert "| gpt-4o-mini | 1 | 100 | 0 | 20 | 0 | $0.000100 |" in text
    assert "| stop | 2 | 100.0% |" in text


def test_terminal_table(tmp_path: Path) -> None:
    console = Console(file=io.StringIO(), width=100, record=True)
    console.print(render_table(build_report(sample_dir(tmp_path))))
    text = console.export_text()

    assert "batchchat · labels" in text
    assert "Requests sent" in text and "14" in text
    assert "RequestTimeout" in text and "8: no response headers" in text
    assert "model mystery-7b has no price" in text


def test_a_report_in_a_notebook(tmp_path: Path) -> None:
    report = build_report(sample_dir(tmp_path))

    assert repr(report) == (
        "RunReport(job='labels', rows_ok=6, rows_error=3, rows_skipped=0, "
        "cost_usd=0.000125 (incomplete), stop_reason='completed')"
    )
    assert report._repr_markdown_() == render_markdown(report)


# -- the property: totals are the sums over the rows -------------------------------------------

PRICES = PriceTable(
    {
        "m-plain": ModelPrice("m-plain", input=1.5, output=6.0),
        "m-cache": ModelPrice("m-cache", input=2.0, output=8.0, cached_input=0.25),
        "m-think": ModelPrice("m-think", input=0.4, output=1.2, thinking_output=4.0),
    }
)

counts = st.one_of(st.none(), st.integers(0, 5000))
results = st.lists(
    st.fixed_dictionaries(
        {
            "row_id": st.sampled_from([str(i) for i in range(12)]),
            "sample": st.integers(0, 2),
            "ok": st.booleans(),
            "model": st.sampled_from(["m-plain", "m-cache", "m-think", "m-none"]),
            "prompt": counts,
            "completion": counts,
            "cached": counts,
            "reasoning": counts,
            "cost": st.one_of(st.none(), st.floats(0, 1, allow_nan=False)),
            "at": st.integers(0, 100),
        }
    ),
    max_size=40,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(results)
def test_report_totals_are_the_sums_over_the_final_rows(
    tmp_path_factory: pytest.TempPathFactory, drawn: list[dict[str, Any]]
) -> None:
    out = tmp_path_factory.mktemp("out")
    rows = [_as_result(i, d) for i, d in enumerate(drawn)]
    if rows:
        write_results(out, rows[: len(rows) // 2], part=0)
        write_results(out, rows[len(rows) // 2 :], part=1)
    final = _final_by_hand(rows)
    stored = build_report(out)
    repriced = build_report(out, prices=PRICES)

    ok = [r for r in final if r["status"] == "ok"]
    assert stored.rows_total == len(final)
    assert stored.rows_ok == len(ok)
    assert stored.rows_error == len(final) - len(ok)
    assert stored.tokens.prompt == sum(r["prompt_tokens"] or 0 for r in final)
    assert stored.tokens.completion == sum(r["completion_tokens"] or 0 for r in final)
    assert stored.tokens.cached == sum(r["cached_tokens"] or 0 for r in final)
    assert stored.tokens.reasoning == sum(r["reasoning_tokens"] or 0 for r in final)
    assert stored.cost_usd == pytest.approx(math.fsum(r["cost_usd"] or 0 for r in final))
    assert sum(m.rows for m in stored.models) == sum(1 for r in final if _billable(r))
    by_hand = [PRICES.cost_usd(r["model"], _usage(r)) for r in final if _billable(r)]
    assert repriced.cost_usd == pytest.approx(math.fsum(c or 0 for c in by_hand), abs=1e-12)
    assert sum(m.unpriced_rows for m in repriced.models) == by_hand.count(None)
    assert repriced.cost_complete == (None not in by_hand)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(results)
def test_the_report_is_the_same_before_and_after_compaction(
    tmp_path_factory: pytest.TempPathFactory, drawn: list[dict[str, Any]]
) -> None:
    # before: winners chosen from repeated keys; after: every row counts, read streaming
    out = tmp_path_factory.mktemp("out")
    rows = [_as_result(i, d) for i, d in enumerate(drawn)]
    write_results(out, rows[: len(rows) // 2], part=0)
    write_results(out, rows[len(rows) // 2 :], part=1)
    before = build_report(out, prices=PRICES).to_dict()
    compact_parts(out / "results")
    assert not has_repeated_keys(out)
    after = build_report(out, prices=PRICES).to_dict()
    # a run's end tells the report the ledger was just compacted: the same report
    assert build_report(out, prices=PRICES, compacted=True).to_dict() == after
    # sums of floats in another order may differ in the last bit
    assert after.pop("cost")["total_usd"] == pytest.approx(before.pop("cost")["total_usd"])
    assert after == before


def _as_result(index: int, d: dict[str, Any]) -> dict[str, Any]:
    if not d["ok"]:
        return error_row(d["row_id"], sample=d["sample"], at=d["at"] + index / 1000)
    return ok_row(
        d["row_id"],
        sample=d["sample"],
        model=d["model"],
        prompt=d["prompt"],
        completion=d["completion"],
        cached=d["cached"],
        reasoning=d["reasoning"],
        cost=d["cost"],
        at=d["at"] + index / 1000,
    )


def _final_by_hand(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (row_id, sample): the last written ok one, else the last written error."""
    best: dict[tuple[str, int], tuple[tuple[bool, int], dict[str, Any]]] = {}
    for order, row in enumerate(rows):
        key = (row["row_id"], row["sample"])
        rank = (row["status"] == "ok", order)
        if key not in best or rank > best[key][0]:
            best[key] = (rank, row)
    return [{**dict.fromkeys(RESULT_SCHEMA), **row} for _, row in best.values()]


def _billable(row: dict[str, Any]) -> bool:
    return row["status"] == "ok" or row["prompt_tokens"] is not None or row["cost_usd"] is not None


def _usage(row: dict[str, Any]) -> Usage:
    return Usage(
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        cached_tokens=row["cached_tokens"],
        reasoning_tokens=row["reasoning_tokens"],
    )


# -- a real run against the simulator ----------------------------------------------------------


async def test_report_of_a_faulty_run_matches_the_simulators_own_counts(
    tmp_path: Path, simulator_factory: Any
) -> None:
    import aiohttp

    from batchchat.runner import RunOptions, run_job
    from batchchat.spec import load_spec

    sim = await simulator_factory(faults={"http_500": 0.2, "http_429": 0.04, "seed": 7})
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(f'{{"id": "r{i}", "text": "review {i}"}}\n' for i in range(40)))
    spec = load_spec(
        {
            "name": "faulty",
            "input": {"path": str(rows), "id_column": "id"},
            "endpoint": {"base_url": sim.base_url},
            "request": {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "Label: {{ text }}"}],
                "max_tokens": 5,
            },
            "samples": 2,
            "limits": {"adaptive": False},
            "retry": {"max_attempts": 3, "initial_wait_s": 0.001, "max_wait_s": 0.005},
            "output": {"path": str(tmp_path / "out")},
        }
    )
    outcome = await run_job(spec, RunOptions())
    stats_url = sim.base_url.removesuffix("/v1") + "/stats"
    async with aiohttp.ClientSession() as session, session.get(stats_url) as response:
        counted = await response.json()
    report = build_report(tmp_path / "out", prices=PriceTable.from_spec(spec))

    assert report.rows_total == 80
    assert report.requests_sent == counted["requests"]
    assert report.retries == counted["requests"] - 80
    assert {str(k): v for k, v in report.status_counts.items()} == counted["by_status"]
    assert report.rate_limited == counted["by_status"].get("429", 0) > 0
    assert report.rows_ok == counted["answered"] == counted["by_status"]["200"]
    assert report.rows_error == 80 - counted["answered"] > 0
    assert report.tokens.prompt == counted["prompt_tokens"]
    assert report.tokens.completion == counted["completion_tokens"]
    assert report.cost_usd == pytest.approx(
        (report.tokens.prompt - report.tokens.cached) * 0.15e-6
        + report.tokens.cached * 0.075e-6
        + report.tokens.completion * 0.60e-6
    )
    assert outcome.report.to_dict()["rows"] == report.to_dict()["rows"]
    assert sum(e.count for e in report.errors) == report.rows_error


def test_cache_hits_and_reasks_are_counted_and_never_priced_as_zero(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cached = {**ok_row("1"), "cached": True, "cost_usd": 0.0, "cost_saved_usd": 0.5}
    unpriced_hit = {**ok_row("2"), "cached": True, "cost_usd": 0.0, "cost_saved_usd": None}
    asked = {**ok_row("3"), "reasks": 2, "ask_costs_usd": [0.1, 0.2, 0.3], "parse_status": "ok"}
    unpriced = {**ok_row("4"), "reasks": 1, "ask_costs_usd": [None, None]}
    unpriced["parse_status"] = "invalid_json"
    write_results(out, [cached, unpriced_hit, asked, unpriced], schema=ASKS_SCHEMA)
    report = build_report(out)
    assert report.cache == {"hits": 2, "saved_usd": 0.5, "unpriced": 1}
    assert report.reasks == {
        "rows": 2,
        "reasks": 3,
        "cost_usd": pytest.approx(0.5),
        "fixed": 1,
        "still_failing": 1,
    }
    assert report.parse_status == {"invalid_json": 1, "ok": 1}
    assert report.latency.count == 2  # the cached rows took no time: not in the latency
    table = dict(summary_rows(report))
    assert table["From the cache (cost saved)"] == "2 ($0.5000)"
    assert table["Re-asks (rows · cost)"] == "3 (2 rows · $0.5000)"
    assert table["… rows fixed / still failing"] == "1 / 1"
    markdown = render_markdown(report)
    assert "| invalid_json | 1 | 50.0% |" in markdown
    only_unpriced = tmp_path / "unpriced"
    write_results(only_unpriced, [unpriced_hit, unpriced], schema=ASKS_SCHEMA)
    again = build_report(only_unpriced)
    assert again.cache is not None and again.cache["saved_usd"] is None
    assert again.reasks is not None and again.reasks["cost_usd"] is None
    assert dict(summary_rows(again))["From the cache (cost saved)"] == "1 (unknown)"


def test_the_terminal_table_of_a_labeling_run_counts_its_labels(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    report = batchchat.run(root / "jobs" / "labeling.yaml", limit=6, output=str(tmp_path / "o"))
    console = Console(file=io.StringIO(), width=100, record=True)
    console.print(render_table(report))
    text = console.export_text()
    majority = report.labels["majority"] if report.labels else {}
    assert "Majority label per row" in text
    for label, entry in majority["labels"].items():
        assert re.search(rf"{re.escape(label)}\s+{entry['count']}\s", text), label
    assert "(none matched)" in text and "mean confidence" in text
