"""Batch mode meets the response cache and the answer check (issue 20), over HTTP.

A cached row is answered before the shards are cut: it is never put in an input file. The
answers a batch brings back are kept in the cache like online ones. Re-asks are online
only (a spec error in batch mode); the check still marks each answer's ``parse_status``,
and the rows that failed it can be asked again by an online job chained on the output.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from batchchat.errors import SpecError
from batchchat.models import ExitCode, Usage
from batchchat.pricing import PriceTable
from batchchat.runner import run_job
from batchchat.spec import load_spec
from tests.batchapi._jobs import batch_spec, raw_parts
from tests.conftest import SimulatorFactory

FAST = {"time_scale": 3000}


async def test_cached_rows_are_never_uploaded_and_batch_answers_are_cached(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    server = await simulator_factory(batch=FAST)
    cache = {"path": str(tmp_path / "cache")}
    request = {"temperature": 0, "max_tokens": 300}  # answers end by themselves: kept
    first = batch_spec(tmp_path / "a", server.base_url, rows=30, cache=cache, request=request)
    assert (await run_job(first)).exit_code == ExitCode.OK
    assert server.stats()["batch"]["lines_submitted"] == 30
    assert (raw_parts(first.output_dir)["finish_reason"] == "stop").all()

    # the same 30 rows and 10 new ones, in another output directory: only the new are sent
    second = batch_spec(tmp_path / "b", server.base_url, rows=40, cache=cache, request=request)
    outcome = await run_job(second)

    assert outcome.exit_code == ExitCode.OK
    batch = server.stats()["batch"]
    assert batch["lines_submitted"] == 40 and batch["custom_ids"] == 40  # 30 + the 10 new
    rows = raw_parts(second.output_dir).sort("row_id")
    assert rows.height == 40 and (rows["status"] == "ok").all()
    cached = rows.filter(pl.col("cached"))
    assert cached["row_id"].to_list() == [f"r{i:05d}" for i in range(30)]
    assert cached["batch_id"].is_null().all() and (cached["cost_usd"] == 0).all()
    sent = rows.filter(~pl.col("cached"))
    assert sent.height == 10 and sent["batch_id"].is_not_null().all()
    # what a hit saved is what the row would have cost here: at batch prices
    prices = PriceTable.from_spec(second)
    for row in cached.iter_rows(named=True):
        usage = Usage(row["prompt_tokens"], row["completion_tokens"])
        assert row["cost_saved_usd"] == pytest.approx(prices.cost_usd(row["model"], usage, "batch"))
    answers_a = raw_parts(first.output_dir).sort("row_id")["content"].to_list()
    assert cached["content"].to_list() == answers_a  # the batch's own answers, served
    assert outcome.report.cache is not None and outcome.report.cache["hits"] == 30


async def test_a_sampling_request_is_neither_served_nor_kept(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    server = await simulator_factory(batch=FAST)
    cache = {"path": str(tmp_path / "cache")}
    request = {"temperature": 0.7}  # not deterministic: a fresh draw is what it asks for
    for name in ("a", "b"):
        spec = batch_spec(tmp_path / name, server.base_url, rows=12, cache=cache, request=request)
        assert (await run_job(spec)).exit_code == ExitCode.OK
    assert server.stats()["batch"]["lines_submitted"] == 24


def test_re_asks_are_refused_in_batch_mode(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"output.reask is online only") as caught:
        batch_spec(tmp_path, output={"parse": "json", "reask": 2})
    assert "input.where: parse_status != 'ok'" in str(caught.value)
    # no re-asks (count 0) is allowed: it asks for nothing batch mode cannot do
    assert batch_spec(tmp_path, output={"parse": "json", "reask": 0}).mode == "batch"


async def test_failing_answers_are_marked_and_an_online_job_chained_on_them_re_asks_them(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    server = await simulator_factory(batch=FAST, faults={"invalid_json": 0.3, "seed": 3})
    json_request = {"response_format": {"type": "json_object"}, "max_tokens": 300}
    spec = batch_spec(
        tmp_path, server.base_url, rows=40, request=json_request, output={"parse": "json"}
    )
    assert (await run_job(spec)).exit_code == ExitCode.OK
    rows = raw_parts(spec.output_dir)
    assert (rows["status"] == "ok").all()  # paid answers, kept; the check says which fail
    failing = rows.filter(pl.col("parse_status") != "ok")
    assert failing.height > 0 and set(failing["parse_status"]) == {"invalid_json"}
    assert server.stats()["faults"]["invalid_json"] == failing.height

    chained = load_spec(
        {
            "name": "again",
            "input": {"path": str(spec.output_dir), "where": "parse_status != 'ok'"},
            "endpoint": {"base_url": server.base_url},
            "request": {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "Label: {{ text }}"}],
                **json_request,
            },
            "output": {"path": str(tmp_path / "again"), "parse": "json", "reask": 6},
        }
    )
    outcome = await run_job(chained)
    assert outcome.exit_code == ExitCode.OK
    again = raw_parts(chained.output_dir)
    assert sorted(again["row_id"]) == sorted(failing["row_id"])
    assert (again["parse_status"] == "ok").all()
