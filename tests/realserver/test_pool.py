"""A pool of real servers: both llama-servers, the LiteLLM proxy (a gateway with its own rpm
limit and 429s), and the proxy again with a wrong key.

What the real servers do here that a pool must cope with (and the simulator now mimics):
the proxy, having no database, answers a wrong key with ``400 no_db_connection`` -- not a
401 -- so the member is recognised by its answers (client errors, nothing ever succeeding)
and dropped with a warning; ``tiny-via-llama-server`` allows ``rpm - 1`` requests per
calendar minute and then answers 429 with ``llm_provider-retry-after: 60``, which holds
that member alone while the llama-servers go on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.realserver import _jobs as jobs
from tests.realserver._servers import LITELLM_KEY, Server

pytestmark = pytest.mark.realserver

ROWS = 300


def test_a_pool_of_real_servers_answers_every_row_once_and_drops_the_wrong_key(
    tmp_path: Path, llama: Server, llama_nojinja: Server, litellm: Server
) -> None:
    spec = jobs.job_spec(llama, jobs.write_input(tmp_path, jobs.prompts(ROWS)))
    del spec["endpoint"]
    spec["endpoints"] = [
        {"name": "llama-a", "base_url": llama.base_url, "limits": {"max_concurrency": 8}},
        {"name": "llama-b", "base_url": llama_nojinja.base_url, "limits": {"max_concurrency": 8}},
        {
            "name": "litellm",
            "base_url": litellm.base_url,
            "api_key_env": "POOL_LITELLM_KEY",
            "model": {"tiny": "tiny-via-llama-server"},  # its name for the same engine
            "pricing": {"tiny-via-llama-server": {"input": 0.1, "output": 0.4}},
        },
        {
            "name": "litellm-stale-key",
            "base_url": litellm.base_url,
            "api_key_env": "POOL_STALE_KEY",
            "model": {"tiny": "mock-gpt"},
        },
    ]
    spec["pricing"] = {"tiny": {"input": 0.0, "output": 0.0}}
    job = jobs.write_job(tmp_path, spec)
    env = {**os.environ, "POOL_LITELLM_KEY": LITELLM_KEY, "POOL_STALE_KEY": "sk-stale-key-0000"}
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "batchchat", "run", str(job)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    wall = time.monotonic() - start
    output = proc.stdout + proc.stderr
    df = jobs.results(tmp_path)
    endpoints = jobs.report(tmp_path)["endpoints"]
    split = {
        name: (e["requests_sent"], e["rows_ok"], e["rate_limited"]) for name, e in endpoints.items()
    }
    print(
        f"exit {proc.returncode}; wall {wall:.1f} s; (requests, rows ok, 429s) by endpoint: {split}"
    )

    assert proc.returncode == 0, output[-3000:]
    assert df.height == ROWS and df["row_id"].n_unique() == ROWS  # every row exactly once
    assert (df["status"] == "ok").all()
    assert set(df["endpoint"]) <= {"llama-a", "llama-b", "litellm"}
    stale = endpoints["litellm-stale-key"]
    assert stale["rows_ok"] == 0 and stale["requests_sent"] <= 5
    assert "No connected db." in stale["removed"]
    assert "endpoint 'litellm-stale-key'" in output and "out of the pool" in output
    assert "sk-stale-key-0000" not in output and LITELLM_KEY not in output
    # LiteLLM's own limit: it answered what its minute allows, then held, alone
    litellm_rows = endpoints["litellm"]["rows_ok"]
    assert litellm_rows <= 10 and endpoints["llama-a"]["rows_ok"] > 0
    assert endpoints["llama-b"]["rows_ok"] > 0
    if endpoints["litellm"]["rate_limited"]:
        assert wall < 60, "a 429's minute held the whole pool"
    # its rows are priced by its own prices, the llama-servers' by the job's
    priced = df.filter(df["endpoint"] == "litellm")["cost_usd"]
    assert litellm_rows == 0 or (priced > 0).all()
    assert (df.filter(df["endpoint"] != "litellm")["cost_usd"] == 0).all()
    assert (
        sum(e["requests_sent"] for e in endpoints.values())
        == jobs.report(tmp_path)["requests"]["sent"]
    )


def test_a_pool_with_real_failing_gateway_deployments_cools_them_down_not_per_row(
    tmp_path: Path, llama: Server, llama_nojinja: Server, litellm: Server
) -> None:
    """LiteLLM's always-500 and always-429 deployments as pool members beside the two
    llama-servers: the 500s cool their member down after ``routing.failures`` and it is only
    probed after that; the 429s (no ``retry-after`` at all) hold their member alone; every
    row is answered once by the llama-servers."""
    spec = jobs.job_spec(llama, jobs.write_input(tmp_path, jobs.prompts(ROWS)))
    del spec["endpoint"]
    gateway = {"base_url": litellm.base_url, "api_key_env": "POOL_LITELLM_KEY"}
    spec["endpoints"] = [
        {"name": "llama-a", "base_url": llama.base_url, "limits": {"max_concurrency": 8}},
        {"name": "llama-b", "base_url": llama_nojinja.base_url, "limits": {"max_concurrency": 8}},
        {"name": "gateway-500", **gateway, "model": {"tiny": "mock-500"}},
        {"name": "gateway-429", **gateway, "model": {"tiny": "mock-ratelimit"}},
    ]
    job = jobs.write_job(tmp_path, spec)
    env = {**os.environ, "POOL_LITELLM_KEY": LITELLM_KEY}
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "batchchat", "run", str(job)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    wall = time.monotonic() - start
    output = proc.stdout + proc.stderr
    df = jobs.results(tmp_path)
    report = jobs.report(tmp_path)
    endpoints = report["endpoints"]
    split = {
        name: (e["requests_sent"], e["rows_ok"], e["rate_limited"], e["failed_attempts"])
        for name, e in endpoints.items()
    }
    print(f"exit {proc.returncode}; wall {wall:.1f} s; (requests, ok, 429s, failed): {split}")

    assert proc.returncode == 0, output[-3000:]
    assert df.height == ROWS and df["row_id"].n_unique() == ROWS
    assert (df["status"] == "ok").all()
    assert set(df["endpoint"]) == {"llama-a", "llama-b"}
    assert list(endpoints) == ["llama-a", "llama-b", "gateway-500", "gateway-429"]
    broken = endpoints["gateway-500"]
    assert broken["rows_ok"] == 0 and broken["cooldowns"] >= 1
    assert broken["failed_attempts"] == broken["requests_sent"] <= 15  # not once per row
    limited = endpoints["gateway-429"]
    assert limited["rows_ok"] == 0 and limited["rate_limited"] == limited["requests_sent"] <= 15
    assert wall < 60, "a failing member held the whole pool"
    assert LITELLM_KEY not in output
