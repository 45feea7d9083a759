"""Flex processing (``service_tier: flex``): online requests at batch prices, given the long
deadline and the patience with 429s that flex's slower, sometimes refused answers need."""

from __future__ import annotations

from pathlib import Path

import pytest

import batchchat
from batchchat.models import ExitCode, Usage
from batchchat.pricing import PriceTable
from batchchat.runner import run_job
from tests.batchapi._jobs import batch_spec


async def test_a_flex_job_is_priced_at_flex_rates_and_waits_out_its_429s(tmp_path: Path) -> None:
    spec = batch_spec(
        tmp_path,
        rows=30,
        mode="online",
        request={"service_tier": "flex"},
        endpoint={"simulator": {"faults": {"http_429": 0.4, "seed": 7}}},
        retry={"max_attempts": 1},  # a 429 is not an attempt: no row may fail for it
    )
    assert spec.endpoint.timeout_s == 5  # set by the test: kept
    assert spec.retry.rate_limit_patience_s == 3600  # flex's patience: the default here
    outcome = await run_job(spec)
    assert outcome.exit_code == ExitCode.OK and outcome.report.rows_ok == 30
    assert outcome.report.rate_limited > 0
    df = batchchat.read_results(spec.output_dir)
    prices = PriceTable.from_spec(spec)
    row = df.row(0, named=True)
    usage = Usage(row["prompt_tokens"], row["completion_tokens"])
    assert row["cost_usd"] == pytest.approx(prices.cost_usd(row["model"], usage, "flex"))
    assert row["batch_id"] is None
    assert outcome.report.cost_online_usd == pytest.approx(2 * outcome.report.cost_usd)
