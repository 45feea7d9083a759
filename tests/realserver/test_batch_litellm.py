"""Batch mode through a LiteLLM proxy that does run batches: LiteLLM's own ``/v1/files`` and
``/v1/batches`` (``files_settings``, an ``openai`` provider) in front of batchchat's
simulator, which stands in offline for OpenAI's Batch API behind it.

The shared proxy on :8003 has no ``files_settings`` (``test_batch.py`` checks what batch mode
says there). This one is started here from the same LiteLLM install, on free ports, with its
own loopback-only key, and stopped at the end of the module; the shared servers are not
touched. What it shows: the gateway's uploads, creates, polls, downloads, deletes and the
listing batchchat looks for lost batches in all pass through as batchchat expects, also when
runs are killed with SIGKILL at any moment.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tests.realserver._jobs import prompts, report, results, write_input, write_job

pytestmark = pytest.mark.realserver

LITELLM = (
    Path(os.environ.get("REALSERVER_DIR", "~/.cache/batchchat-realserver")).expanduser()
    / "litellm"
    / "venv"
    / "bin"
    / "litellm"
)
KEY = "sk-batch-proxy-test-0b7d"  # this proxy's master key (loopback only)
KEY_ENV = "BATCH_PROXY_KEY"


@dataclass(frozen=True)
class Proxy:
    base_url: str  # the LiteLLM proxy's /v1
    simulator: str  # the simulator's root (its /stats)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_up(url: str, seconds: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{url} exited early: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{url} did not come up in {seconds:g} s: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    if not LITELLM.exists():
        pytest.skip(f"no LiteLLM at {LITELLM}: run /work/shared/realserver/litellm/run.sh install")
    folder = tmp_path_factory.mktemp("litellm-batches")
    sim_port, proxy_port = _free_port(), _free_port()
    sim_url = f"http://127.0.0.1:{sim_port}/v1"
    config = {
        "model_list": [
            {
                "model_name": "gpt-4o-mini",
                "litellm_params": {
                    "model": "openai/gpt-4o-mini",
                    "api_base": sim_url,
                    "api_key": "sk-sim",
                },
            }
        ],
        "files_settings": [
            {"custom_llm_provider": "openai", "api_base": sim_url, "api_key": "sk-sim"}
        ],
        "litellm_settings": {"num_retries": 0, "request_timeout": 30},
        "general_settings": {"master_key": KEY},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    simulate = [
        *(sys.executable, "-m", "batchchat", "simulate", "--port", str(sim_port)),
        *("--batch-time-scale", "600", "--batch-fail-lines", "0.1"),
        *("--batch-expire-lines", "0.05"),
    ]
    sim_log, proxy_log = folder / "simulator.log", folder / "litellm.log"
    with open(sim_log, "wb") as out:
        simulator = subprocess.Popen(simulate, stdout=out, stderr=subprocess.STDOUT)
    # LiteLLM's openai provider sends /v1/batches calls to OPENAI_API_BASE
    env = {
        **os.environ,
        "OPENAI_API_BASE": sim_url,
        "OPENAI_API_KEY": "sk-sim",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    command = [str(LITELLM), "--config", str(folder / "config.yaml")]
    command += ["--host", "127.0.0.1", "--port", str(proxy_port)]
    with open(proxy_log, "wb") as out:
        litellm = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_up(f"http://127.0.0.1:{sim_port}/health", 30, simulator, sim_log)
        _wait_up(f"http://127.0.0.1:{proxy_port}/health/liveliness", 180, litellm, proxy_log)
        yield Proxy(f"http://127.0.0.1:{proxy_port}/v1", f"http://127.0.0.1:{sim_port}")
    finally:
        _stop(litellm)
        _stop(simulator)


def batch_job(proxy: Proxy, folder: Path, text: str, rows: int = 300) -> dict[str, Any]:
    return {
        "name": "through-litellm",
        "mode": "batch",
        "input": {"path": write_input(folder, prompts(rows, text)), "id_column": "id"},
        "endpoint": {"base_url": proxy.base_url, "api_key_env": KEY_ENV},
        "request": {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "{{ text }}"}],
            "max_tokens": 8,
            "temperature": 0,
        },
        "batch": {
            "lines_per_batch": 100,
            "poll_interval_s": 0.5,
            "max_poll_interval_s": 1,
            "resubmit_rounds": 8,
        },
        "output": {"path": "out"},
    }


def _command(folder: Path, spec: dict[str, Any]) -> list[str]:
    return [sys.executable, "-m", "batchchat", "run", str(write_job(folder, spec)), "-q"]


def _env() -> dict[str, str]:
    return {**os.environ, KEY_ENV: KEY}


def simulator_stats(proxy: Proxy) -> dict[str, Any]:
    with urllib.request.urlopen(proxy.simulator + "/stats", timeout=10) as response:
        data: dict[str, Any] = orjson.loads(response.read())
    return data


def shard_count(folder: Path) -> int:
    state = orjson.loads((folder / "out" / "batches" / "state.json").read_bytes())
    return len(state["shards"])


def test_a_batch_job_through_litellm_answers_every_row_once(proxy: Proxy, tmp_path: Path) -> None:
    before = simulator_stats(proxy)["batch"]
    spec = batch_job(proxy, tmp_path, "Through the gateway, item {i}.")
    done = subprocess.run(
        _command(tmp_path, spec), env=_env(), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = results(tmp_path)
    assert rows.height == 300 and rows["row_id"].n_unique() == 300
    assert (rows["status"] == "ok").all() and rows["batch_id"].str.starts_with("batch_").all()
    after = simulator_stats(proxy)["batch"]
    failed = after["lines_failed"] - before["lines_failed"]
    assert failed > 0  # the simulator's 429 lines really came back through the gateway
    assert after["lines_ok"] - before["lines_ok"] == 300
    assert after["batches_created"] - before["batches_created"] == shard_count(tmp_path)
    cost = report(tmp_path)["cost"]
    assert cost["online_usd"] == pytest.approx(2 * cost["total_usd"])


def test_runs_killed_through_litellm_never_create_a_batch_twice(
    proxy: Proxy, tmp_path: Path
) -> None:
    before = simulator_stats(proxy)["batch"]
    spec = batch_job(proxy, tmp_path, "Killed and resumed, item {i}.")
    for after_s in (0.4, 0.8, 1.2, 1.6, 2.0, 2.5):
        proc = subprocess.Popen(
            _command(tmp_path, spec),
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(after_s)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    done = subprocess.run(
        _command(tmp_path, spec), env=_env(), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = results(tmp_path)
    assert rows.height == 300 and (rows["status"] == "ok").all()
    after = simulator_stats(proxy)
    batch = after["batch"]
    assert batch["batches_created"] - before["batches_created"] == shard_count(tmp_path)
    assert batch["lines_ok"] - before["lines_ok"] == 300  # each line answered once
    assert max(after["answers"].values()) == 1
