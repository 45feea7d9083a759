"""Pools over real HTTP: whole runs against several simulators on 127.0.0.1.

Each simulator's ``/stats`` counts the answers it delivered per request, which is how these
tests prove that every row was answered exactly once across the pool. The rate a pool
reaches is a benchmark's business (``bench/scenarios/pool.py``: rpm 600 + 1,200 + an
always-503 endpoint, measured against the combined limit); here the limits are ten times
higher, so the same 3,000 rows take seconds, and only what cannot depend on the machine's
load is asserted.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from click.testing import CliRunner

import batchchat
from batchchat.cli import main
from batchchat.errors import ResumeError
from batchchat.execute.health import PROVING_IN_FLIGHT
from batchchat.models import StopReason
from batchchat.report.build import build_report
from batchchat.runner import RunOptions, run_job
from batchchat.simulator import SimulatorServer
from batchchat.spec import JobSpec, load_spec
from tests.conftest import SimulatorFactory
from tests.test_runner import write_rows


def pool_job(
    tmp_path: Path, members: list[dict[str, Any]], rows: int = 60, **extra: Any
) -> JobSpec:
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = write_rows(tmp_path / "rows.jsonl", rows)
    spec: dict[str, Any] = {
        "name": "pool",
        "input": {"path": str(data), "id_column": "id"},
        "endpoints": members,
        "request": {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "Label: {{ text }}"}],
            "max_tokens": 8,
        },
        "output": {"path": str(tmp_path / "out")},
        "retry": {"max_attempts": 6, "max_wait_s": 5, "initial_wait_s": 0.05},
        **extra,
    }
    return load_spec(spec)


def member(name: str, sim: SimulatorServer | str = "simulator", **extra: Any) -> dict[str, Any]:
    base_url = sim if isinstance(sim, str) else sim.base_url
    return {"name": name, "base_url": base_url, "timeout_s": 5, **extra}


def answers(*sims: SimulatorServer) -> Counter[str]:
    """Every answer the simulators delivered, by request: a row answered twice shows as 2."""
    total: Counter[str] = Counter()
    for sim in sims:
        total.update(sim.stats()["answers"])
    return total


# -- the acceptance ---------------------------------------------------------------------------


async def test_three_endpoints_one_failing_every_row_once_and_ok(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    slow = await simulator_factory(rpm=6_000)
    fast = await simulator_factory(rpm=12_000)
    failing = await simulator_factory(faults={"http_503": 1.0})
    members = [
        member("slow", slow, limits={"rpm": 6_000}),
        member("fast", fast, limits={"rpm": 12_000}),
        member("failing", failing),
    ]
    spec = pool_job(tmp_path, members, rows=3_000)
    outcome = await run_job(spec)

    assert outcome.exit_code == 0 and outcome.stats.stop_reason == StopReason.COMPLETED
    df = batchchat.read_results(spec.output_dir)
    assert df.height == 3_000 and df["row_id"].n_unique() == 3_000
    assert (df["status"] == "ok").all()
    delivered = answers(slow, fast, failing)
    assert len(delivered) == 3_000 and set(delivered.values()) == {1}  # each row once
    split = dict(df.group_by("endpoint").len().iter_rows())
    assert set(split) == {"slow", "fast"} and min(split.values()) > 300
    # the failing endpoint was cooled down after a handful, not tried once per row
    assert failing.stats()["requests"] <= 15
    assert outcome.stats.endpoints["failing"].cooldowns >= 1
    report = {e.name: e for e in outcome.report.endpoints}
    assert list(report) == ["slow", "fast", "failing"]  # all three, in the spec's order
    assert report["failing"].failed_attempts == failing.stats()["requests"]
    assert report["slow"].rows_ok + report["fast"].rows_ok == 3_000
    assert report["fast"].p50_ms is not None and report["fast"].cost_usd is not None
    text = (spec.output_dir / "report.md").read_text()
    assert "## Endpoints" in text and "| failing |" in text


async def test_an_endpoint_with_a_wrong_key_is_dropped_with_a_warning(
    simulator_factory: SimulatorFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POOL_GOOD_KEY", "sk-good")
    monkeypatch.setenv("POOL_STALE_KEY", "sk-stale")
    good = await simulator_factory(api_key="sk-good")
    gateway = await simulator_factory(api_key="sk-good", auth_error="litellm")
    members = [
        member("good", good, api_key_env="POOL_GOOD_KEY"),
        member("stale", good, api_key_env="POOL_STALE_KEY"),
        member("gateway", gateway, api_key_env="POOL_STALE_KEY"),
    ]
    spec = pool_job(tmp_path, members, rows=200)
    warnings: list[str] = []
    outcome = await run_job(spec, RunOptions(on_warning=warnings.append))

    assert outcome.exit_code == 0
    df = batchchat.read_results(spec.output_dir)
    assert df.height == 200 and (df["status"] == "ok").all()
    assert set(df["endpoint"]) == {"good"}
    assert len(answers(good, gateway)) == 200 and set(answers(good).values()) == {1}
    assert sorted(w.split("'")[1] for w in warnings) == ["gateway", "stale"]
    assert any("AuthenticationError: HTTP 401" in w for w in warnings)
    assert any("No connected db." in w for w in warnings)  # LiteLLM's 400 for a wrong key
    assert gateway.stats()["requests"] <= 5
    for secret in ("sk-good", "sk-stale"):
        assert secret not in " ".join(warnings)
        assert secret not in (spec.output_dir / "report.md").read_text()


def test_a_pool_where_every_key_is_wrong_stops_fast_with_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POOL_WRONG_KEY", "sk-wrong")
    members = [
        member("a", api_key_env="POOL_WRONG_KEY", simulator={"api_key": "sk-a"}),
        member("b", api_key_env="POOL_WRONG_KEY", simulator={"api_key": "sk-b"}),
    ]
    spec = pool_job(tmp_path, members, rows=5_000)
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(spec.redacted()))
    result = CliRunner().invoke(main, ["run", str(job)])
    assert result.exit_code == 1, result.output
    assert "Stopped early: every endpoint of the pool is out: 'a'" in " ".join(
        result.output.split()
    )
    df = batchchat.read_results(tmp_path / "out")
    # the refused attempts in flight are error rows, as with one endpoint; not 5,000 of them
    assert df.height <= 2 * PROVING_IN_FLIGHT
    assert set(df["error_type"]) <= {"AuthenticationError"}
    assert "sk-wrong" not in result.output


async def test_the_fallback_tier_gets_traffic_only_while_the_first_is_saturated(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    cheap = await simulator_factory(latency={"mean_ms": 30})
    fallback = await simulator_factory()
    members = [
        member("cheap", cheap, limits={"max_concurrency": 2}),
        member("fallback", fallback, priority=2, limits={"max_concurrency": 2}),
    ]
    saturated = await run_job(pool_job(tmp_path / "1", members, rows=80))
    assert saturated.exit_code == 0
    split = saturated.stats.endpoints
    assert split["cheap"].results_ok > 0 and split["fallback"].results_ok > 0
    assert cheap.stats()["max_in_flight"] == 2

    members[0]["limits"] = {"max_concurrency": 64}  # room for every row: no overflow
    fallback.reset_stats()
    roomy = await run_job(pool_job(tmp_path / "2", members, rows=60))
    assert roomy.stats.endpoints["cheap"].results_ok == 60
    assert fallback.stats()["requests"] == 0


async def test_a_first_tier_whose_minute_is_used_up_hands_its_rows_to_the_fallback_at_once(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    # the LiteLLM proxy mid-minute: its first answer is a 429 with a 60 s retry-after and
    # nothing else; held (not on trial), the cheap tier is saturated from the start
    gateway = await simulator_factory(rpm=10, prefill=True, rate_limit_style="gateway")
    fallback = await simulator_factory()
    members = [member("gateway", gateway), member("fallback", fallback, priority=2)]
    # the minute is within retry.max_wait_s: the advice holds the member (it is not put out)
    retry = {"max_attempts": 6, "max_wait_s": 120, "initial_wait_s": 0.05}
    outcome = await run_job(pool_job(tmp_path, members, rows=60, retry=retry))

    assert outcome.exit_code == 0
    assert outcome.stats.endpoints["fallback"].results_ok == 60
    assert 1 <= gateway.stats()["requests"] <= PROVING_IN_FLIGHT
    assert outcome.stats.endpoints["gateway"].rate_limited == gateway.stats()["requests"]
    slowest = batchchat.read_results(tmp_path / "out")["latency_ms"].max()
    assert isinstance(slowest, float) and slowest < 30_000  # nobody waited out the minute


async def test_a_pool_job_is_served_from_the_response_cache_and_a_hit_names_no_endpoint(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    a, b = await simulator_factory(), await simulator_factory()
    members = [member("a", a), member("b", b)]
    request = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Label: {{ text }}"}],
        "max_tokens": 512,  # room to finish: an answer cut by the limit is not kept
        "temperature": 0,  # deterministic: cacheable
    }
    cache = {"path": str(tmp_path / "cache")}
    first = await run_job(pool_job(tmp_path / "1", members, rows=50, request=request, cache=cache))
    second = await run_job(pool_job(tmp_path / "2", members, rows=50, request=request, cache=cache))

    assert first.stats.requests_sent == 50 and first.stats.cache_stored == 50
    assert second.exit_code == 0 and second.stats.requests_sent == 0
    assert a.stats()["requests"] + b.stats()["requests"] == 50  # not one more
    rows = batchchat.read_results(tmp_path / "2" / "out")
    assert rows.height == 50 and rows["cached"].all() and rows["endpoint"].is_null().all()
    assert second.stats.cache_hits == 50
    assert all(e.requests_sent == 0 for e in second.stats.endpoints.values())


async def test_a_pool_resumes_with_members_added_or_removed_but_not_remapped(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    a, b = await simulator_factory(), await simulator_factory()
    first = await run_job(pool_job(tmp_path, [member("a", a), member("b", b)], rows=40))
    assert first.exit_code == 0
    # another member joins and one leaves: the same requests, resumed (nothing left to send)
    again = await run_job(pool_job(tmp_path, [member("b", b), member("c", a)], rows=50))
    assert again.exit_code == 0 and again.stats.skipped == 40
    assert again.stats.results_ok == 10
    df = batchchat.read_results(tmp_path / "out")
    assert df.height == 50 and set(df["endpoint"]) <= {"a", "b", "c"}
    # a member that answered before now sent another model name: refused
    remapped = [member("a", a, model={"gpt-4o-mini": "gpt-4o"}), member("b", b)]
    with pytest.raises(
        ResumeError, match=r"endpoints\[a\]\.model\.gpt-4o-mini: 'gpt-4o-mini' → 'gpt-4o'"
    ):
        await run_job(pool_job(tmp_path, remapped, rows=50))


async def test_each_member_is_sent_its_model_and_priced_by_its_own_prices(
    tmp_path: Path,
) -> None:
    members = [
        member(
            "azure",
            model={"gpt-4o-mini": "my-deployment"},
            pricing={"my-deployment": {"input": 1000, "output": 0}},
        ),
        member("openai"),
    ]
    spec = pool_job(tmp_path, members, rows=60, routing={"sticky": "row"})
    outcome = await run_job(spec)
    df = pl.read_parquet(spec.output_dir / "results" / "*.parquet")
    assert outcome.exit_code == 0 and df.height == 60
    azure = df.filter(pl.col("endpoint") == "azure")
    openai = df.filter(pl.col("endpoint") == "openai")
    assert azure.height > 0 and openai.height > 0
    assert set(azure["model"]) == {"my-deployment"} and set(openai["model"]) == {"gpt-4o-mini"}
    # azure's own price (per 1M prompt tokens: 1,000 USD) vs the built-in gpt-4o-mini price
    assert (azure["cost_usd"] == azure["prompt_tokens"] * 1000 / 1e6).all()
    assert (openai["cost_usd"] < azure["cost_usd"].min()).all()
    by_endpoint = {e.name: e.cost_usd for e in outcome.report.endpoints}
    assert by_endpoint["azure"] == pytest.approx(azure["cost_usd"].sum())
    # the same rows on a re-run with --force go to the same members: stickiness by row id
    again = await run_job(spec, RunOptions(force=True))
    df2 = pl.read_parquet(spec.output_dir / "results" / "*.parquet")
    assert again.exit_code == 0
    assert dict(df2.select("row_id", "endpoint").iter_rows()) == dict(
        df.select("row_id", "endpoint").iter_rows()
    )


async def test_a_dry_run_rehearses_the_pool_on_simulators(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NEVER_SET_KEY", raising=False)
    members = [
        member("openai", "https://api.openai.com/v1", api_key_env="NEVER_SET_KEY"),
        member("local", "http://127.0.0.1:9/v1", priority=2),
    ]
    spec = pool_job(tmp_path, members, rows=30)
    outcome = await run_job(spec, RunOptions(dry_run=True))
    assert outcome.exit_code == 0 and outcome.report.rows_ok == 30
    assert {e.name for e in outcome.report.endpoints} == {"openai", "local"}


def test_the_example_pool_job_runs_on_the_simulator(tmp_path: Path) -> None:
    job = Path(__file__).resolve().parents[2] / "jobs" / "pool.yaml"
    out = tmp_path / "pool"
    result = CliRunner().invoke(main, ["run", str(job), "--limit", "40", "-o", str(out)])
    assert result.exit_code == 0, result.output
    df = batchchat.read_results(out)
    assert df.height == 40 and (df["status"] == "ok").all()
    assert set(df["endpoint"]) <= {"key-a", "key-b", "fallback"}  # never the broken one
    report = {e.name: e for e in build_report(out).endpoints}
    assert list(report) == ["key-a", "key-b", "flaky", "fallback"]
    assert report["flaky"].rows_ok == 0 and report["flaky"].failed_attempts >= 1
