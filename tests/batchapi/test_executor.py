"""Batch mode end to end: a job through the simulator's Batch API over HTTP, read back.

The built-in simulator runs in-process (``base_url: simulator``), its time sped up by
``time_scale``; batchchat polls it at the same pace, so a batch of "11 minutes" takes a
fraction of a second.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import batchchat
from batchchat.batchapi.state import load_state
from batchchat.models import ExitCode, StopReason
from batchchat.pricing import PriceTable
from batchchat.results.layout import OutputLayout
from batchchat.runner import RunOptions, run_job
from tests.batchapi._jobs import answer_prefix, batch_spec, raw_parts

FAST = 3000.0  # simulated seconds per second: a default batch takes ~0.2 s


def sim(**batch: Any) -> dict[str, Any]:
    return {"batch": {"time_scale": FAST, **batch}}


async def test_every_row_is_answered_once_joined_to_its_row_at_batch_prices(tmp_path: Path) -> None:
    spec = batch_spec(
        tmp_path,
        rows=60,
        simulator=sim(fail_lines=0.15, expire_lines=0.1),
        batch={"lines_per_batch": 25, "resubmit_rounds": 8},
        request={"max_tokens": 40},
    )
    outcome = await run_job(spec)
    assert outcome.exit_code == ExitCode.OK and outcome.stats.stop_reason == StopReason.COMPLETED
    raw = raw_parts(spec.output_dir)
    assert raw.height == 60 and raw["row_id"].n_unique() == 60  # compacted: one row each
    assert (raw["status"] == "ok").all()
    for row in raw.iter_rows(named=True):  # each answer names the row it answers
        assert row["content"].startswith(answer_prefix(row["text"]))
        assert row["text"].startswith(f"review number {int(row['row_id'][1:])} ")
    assert raw["batch_id"].str.starts_with("batch_").all()
    assert raw["attempts"].max() > 1  # some lines were answered by a resubmission
    prices = PriceTable.from_spec(spec)
    for row in raw.iter_rows(named=True):
        usage = batchchat.models.Usage(row["prompt_tokens"], row["completion_tokens"])
        assert row["cost_usd"] == pytest.approx(prices.cost_usd(row["model"], usage, "batch"))
    report = outcome.report
    assert report.cost_usd == pytest.approx(raw["cost_usd"].sum())
    assert report.cost_online_usd == pytest.approx(2 * report.cost_usd)
    assert report.batches is not None and report.batches["lines_pending"] == 0


async def test_only_the_lines_that_failed_or_expired_are_sent_again(
    simulator_factory: Any, tmp_path: Path
) -> None:
    server = await simulator_factory(
        batch={"time_scale": FAST, "fail_lines": 0.2, "expire_lines": 0.1}
    )
    spec = batch_spec(
        tmp_path, server.base_url, rows=80, batch={"lines_per_batch": 30, "resubmit_rounds": 8}
    )
    outcome = await run_job(spec)
    assert outcome.exit_code == ExitCode.OK
    counts = server.stats()["batch"]
    # every line once, plus once more for each time it failed or expired: nothing else
    assert counts["lines_submitted"] == 80 + counts["lines_failed"]
    assert counts["lines_ok"] == 80
    assert sorted(server.stats()["answers"].values()) == [1] * 80  # none answered twice
    state = load_state(OutputLayout(spec.output_dir))
    assert counts["batches_created"] == len(state.shards)
    assert outcome.report.batches is not None
    assert outcome.report.batches["lines_resubmitted"] == counts["lines_failed"]
    # the counters (progress, status) count rows, not lines: a resent line is not a failed row
    assert (outcome.stats.results_ok, outcome.stats.results_error) == (80, 0)
    assert outcome.stats.retries == counts["lines_failed"] > 0


async def test_lines_a_retry_cannot_fix_are_error_rows_at_once(tmp_path: Path) -> None:
    spec = batch_spec(
        tmp_path,
        rows=40,
        simulator=sim(fail_lines=0.25, fail_status=400),
        batch={"resubmit_rounds": 3},
    )
    outcome = await run_job(spec)
    df = batchchat.read_results(spec.output_dir)
    failed = df.filter(pl.col("status") == "error")
    assert outcome.exit_code == ExitCode.FAILED and 0 < failed.height < 40
    assert set(failed["error_type"]) == {"ClientError"} and set(failed["http_status"]) == {400}
    assert set(failed["attempts"]) == {1}  # a 400 is not sent again
    assert failed["batch_id"].is_not_null().all()


async def test_a_batch_refused_for_the_token_queue_is_created_again_and_fails_no_row(
    tmp_path: Path,
) -> None:
    # 20-line shards of ~13 tokens a line: two fit the queue, the third is refused
    spec = batch_spec(
        tmp_path,
        rows=100,
        simulator=sim(enqueued_token_limit=600),
        batch={"lines_per_batch": 20, "token_limit_backoff_s": 60},
    )
    outcome = await run_job(spec)
    assert outcome.exit_code == ExitCode.OK and outcome.report.rows_ok == 100
    state = load_state(OutputLayout(spec.output_dir))
    refused = [shard for shard in state.shards if shard.history]
    assert refused, "no batch met the token limit: the test proves nothing"
    assert all(shard.status == "completed" for shard in state.shards)
    assert outcome.report.batches is not None and outcome.report.batches["token_limited"] >= 1


async def test_the_enqueued_token_budget_sends_shards_in_waves(tmp_path: Path) -> None:
    spec = batch_spec(
        tmp_path,
        rows=100,
        simulator=sim(),
        batch={"lines_per_batch": 25, "max_enqueued_tokens": 700},
    )
    outcome = await run_job(spec)
    assert outcome.exit_code == ExitCode.OK
    shards = load_state(OutputLayout(spec.output_dir)).shards
    assert len(shards) == 4
    ends = sorted(shard.ended_at or 0 for shard in shards)
    later = [shard for shard in shards if (shard.created_at or 0) >= ends[0]]
    assert later, "every batch was created before the first ended: one wave"
    assert all(shard.tokens <= 700 for shard in shards)


async def test_lines_the_validation_refuses_fail_and_the_others_are_sent_again(
    tmp_path: Path,
) -> None:
    # each batch draws its refusals afresh (its id is random), and the lines sent again are
    # refused in turn until a batch refuses none: of 30 rows at 10 %, none was refused about
    # one run in 24 (0.9 ** 30), every one about one in 6,000; of 120 rows at 8 %, either is
    # rarer than one run in 20,000
    rows = 120
    spec = batch_spec(tmp_path, rows=rows, simulator=sim(invalid_lines=0.08))
    outcome = await run_job(spec)
    df = batchchat.read_results(spec.output_dir)
    refused = df.filter(pl.col("status") == "error")
    assert (
        outcome.exit_code == ExitCode.FAILED and outcome.stats.stop_reason == StopReason.COMPLETED
    )
    assert 0 < refused.height < rows and set(refused["error_type"]) == {"BatchLineInvalid"}
    assert refused["error_message"].str.contains("line \\d+: invalid_request").all()
    assert df.filter(pl.col("status") == "ok").height == rows - refused.height


async def test_a_batch_refused_whole_stops_the_run_with_its_reason(tmp_path: Path) -> None:
    # one shard at a time (the token budget holds one): the first refusal is seen before
    # the next batch is created
    spec = batch_spec(
        tmp_path,
        rows=30,
        simulator=sim(fail_validation=1.0),
        batch={"lines_per_batch": 10, "max_enqueued_tokens": 150},
    )
    outcome = await run_job(spec)
    assert outcome.stats.stop_reason == StopReason.FATAL and outcome.exit_code == ExitCode.FAILED
    assert outcome.fatal_error is not None
    assert "The batch input file is not valid" in outcome.fatal_error
    assert "failed validation: invalid_request:" in outcome.fatal_error
    state = load_state(OutputLayout(spec.output_dir))
    first, *others = state.shards
    assert outcome.report.rows_error == first.lines and outcome.report.rows_ok == 0
    assert first.phase == "done" and others
    assert {shard.phase for shard in others} == {"planned"}  # not sent: pending for a re-run


async def test_a_batch_with_no_output_file_gives_every_line_its_error(tmp_path: Path) -> None:
    spec = batch_spec(
        tmp_path,
        rows=10,
        simulator=sim(no_output_file=1.0, fail_status=500),
        batch={"resubmit_rounds": 1},
    )
    outcome = await run_job(spec)
    df = batchchat.read_results(spec.output_dir)
    assert outcome.exit_code == ExitCode.FAILED
    assert df.height == 10 and set(df["error_type"]) == {"ServerError"}
    assert set(df["attempts"]) == {2}  # sent once more, then given up


async def test_answers_cut_by_length_are_sent_again_and_the_last_ok_one_kept(
    tmp_path: Path,
) -> None:
    spec = batch_spec(
        tmp_path,
        rows=10,
        simulator=sim(),
        request={"max_tokens": 2},
        batch={"resubmit_finish_reasons": ["length"], "resubmit_rounds": 2},
    )
    outcome = await run_job(spec)
    raw = raw_parts(spec.output_dir)
    assert outcome.exit_code == ExitCode.OK
    assert raw.height == 10 and (raw["finish_reason"] == "length").all()
    assert set(raw["attempts"]) == {3}  # the third answer is the one kept
    state = load_state(OutputLayout(spec.output_dir))
    assert [shard.round for shard in state.shards] == [0, 1, 2]


async def test_the_budget_stops_the_creation_of_batches(tmp_path: Path) -> None:
    spec = batch_spec(
        tmp_path,
        rows=40,
        simulator=sim(),
        batch={"lines_per_batch": 10},
        budget={"max_cost_usd": 0.00005},
    )
    outcome = await run_job(spec)
    assert outcome.stats.stop_reason == StopReason.BUDGET and outcome.exit_code == ExitCode.BUDGET
    assert 0 < outcome.report.rows_ok < 40


async def test_an_interrupted_run_leaves_its_batches_to_the_next(
    simulator_factory: Any, tmp_path: Path
) -> None:
    server = await simulator_factory(batch={"time_scale": 300})  # ~2.2 s a batch
    spec = batch_spec(tmp_path, server.base_url, rows=20)
    stop = asyncio.Event()
    run = asyncio.create_task(run_job(spec, stop=stop))
    layout = OutputLayout(spec.output_dir)
    for _ in range(500):  # the state is another task's file: watch it until a batch exists
        if layout.batch_state.exists() and load_state(layout).shards[0].batch_id:
            break
        await asyncio.sleep(0.02)
    stop.set()
    first = await run
    assert first.stats.stop_reason == StopReason.INTERRUPTED
    assert first.exit_code == ExitCode.INTERRUPTED
    second = await run_job(spec)
    assert second.exit_code == ExitCode.OK and second.report.rows_ok == 20
    assert server.stats()["batch"]["batches_created"] == 1


async def test_a_job_switches_from_online_to_batch_mode_and_keeps_its_rows(tmp_path: Path) -> None:
    online = batch_spec(tmp_path, rows=30, mode="online", input={"limit": 12})
    assert (await run_job(online)).exit_code == ExitCode.OK
    spec = batch_spec(tmp_path, rows=30, simulator=sim())
    outcome = await run_job(spec)
    assert outcome.exit_code == ExitCode.OK and outcome.stats.skipped == 12
    df = batchchat.read_results(spec.output_dir)
    assert df.height == 30 and df["batch_id"].null_count() == 12


async def test_a_dry_run_rehearses_batch_mode_in_the_simulator(tmp_path: Path) -> None:
    spec = batch_spec(tmp_path, "https://api.openai.com/v1", rows=10)
    outcome = await run_job(spec, RunOptions(dry_run=True))
    assert outcome.exit_code == ExitCode.OK and outcome.report.rows_ok == 10


async def test_a_request_no_batch_can_hold_is_an_error_row_and_the_others_go(
    tmp_path: Path,
) -> None:
    spec = batch_spec(tmp_path, rows=6, simulator=sim(), batch={"bytes_per_batch": 250})
    # rows of ~60 bytes of text; one is made too long for any batch
    lengthen(Path(spec.input.path), 3)
    outcome = await run_job(spec)
    df = batchchat.read_results(spec.output_dir).sort("row_id")
    assert outcome.exit_code == ExitCode.FAILED and outcome.report.rows_ok == 5
    refused = df.filter(pl.col("status") == "error").row(0, named=True)
    assert refused["row_id"] == "r00003" and refused["error_type"] == "BatchLineInvalid"
    assert "batch.bytes_per_batch: 250" in refused["error_message"]


def lengthen(data: Path, row: int) -> None:
    lines = data.read_bytes().splitlines()
    lines[row] = lines[row].replace(b"review number", b"review number " + b"x" * 300)
    data.write_bytes(b"\n".join(lines) + b"\n")


async def test_a_model_without_a_batch_price_is_unpriced_and_the_report_says_how_to_fix_it(
    tmp_path: Path,
) -> None:
    prices = {"gpt-4o-mini": {"input": 0.15, "output": 0.6, "batch": None}}
    spec = batch_spec(tmp_path, rows=5, simulator=sim(), pricing=prices)
    report = (await run_job(spec)).report
    assert not report.cost_complete
    assert any("set pricing.gpt-4o-mini.batch" in warning for warning in report.warnings)
