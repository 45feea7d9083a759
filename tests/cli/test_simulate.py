"""``batchchat simulate``: flags → SimulatorSpec, usage errors, a real server in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchchat.cli import main
from batchchat.cli.simulate import build_spec
from batchchat.spec import FaultSpec, LatencySpec, SimulatorSpec, load_spec


def test_flags_map_onto_the_spec() -> None:
    options = {
        "latency_ms": 20.0,
        "latency_distribution": "lognormal",
        "jitter_ms": 5.0,
        "tokens_per_s": 50.0,
        "rpm": 600,
        "tpm": None,
        "prefill": True,
        "fail_500": 0.01,
        "fail_429": 0.02,
        "drop": 0.03,
        "stream_error": 0.04,
        "stall_s": 30.0,
        "fault_seed": 9,
        "keep_alive_s": 2.0,
    }
    spec = build_spec(SimulatorSpec(tpm=5000), options)
    assert spec == SimulatorSpec(
        latency=LatencySpec(mean_ms=20, distribution="lognormal", jitter_ms=5),
        tokens_per_s=50,
        rpm=600,
        tpm=5000,  # not given: the base value stays
        prefill=True,
        faults=FaultSpec(
            http_500=0.01, http_429=0.02, drop=0.03, stream_error=0.04, stall_s=30, seed=9
        ),
        keep_alive_s=2,
    )


def test_flags_for_real_servers_misbehaviour_map_onto_the_spec() -> None:
    options = {
        "rate_limit_style": "gateway",
        "close_after_stream": True,
        "context_tokens": 4096,
        "error_style": "llamacpp",
        "forced_token": 0.1,
        "usage_as_strings": 0.2,
        "usage_as_floats": 0.3,
        "empty_choices": 0.04,
        "no_message": 0.05,
        "trickle": 0.06,
        "trickle_interval_s": 0.5,
        "retry_after_s": 2.0,
    }
    spec = build_spec(SimulatorSpec(faults=FaultSpec(http_503=0.5)), options)
    assert spec == SimulatorSpec(
        rate_limit_style="gateway",
        close_after_stream=True,
        context_tokens=4096,
        error_style="llamacpp",
        faults=FaultSpec(
            http_503=0.5,
            forced_token=0.1,
            usage_as_strings=0.2,
            usage_as_floats=0.3,
            empty_choices=0.04,
            no_message=0.05,
            trickle=0.06,
            trickle_interval_s=0.5,
            retry_after_s=2,
        ),
    )
    assert build_spec(spec, {}) == spec  # flags left out keep the base's values


def test_flags_for_wrong_answers_map_onto_the_spec() -> None:
    options = {"invalid_json": 0.1, "schema_mismatch": 0.2, "off_label": 0.3}
    spec = build_spec(SimulatorSpec(), options)
    assert spec.faults == FaultSpec(invalid_json=0.1, schema_mismatch=0.2, off_label=0.3)


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--rate-limit-style", "litellm"),
        ("--error-style", "vllm"),
        ("--context-tokens", "0"),
        ("--trickle", "1.5"),
        ("--trickle-interval-s", "0"),
        ("--retry-after-s", "-1"),
    ],
)
def test_bad_values_of_the_new_flags_are_usage_errors(flag: str, value: str) -> None:
    result = CliRunner().invoke(main, ["simulate", flag, value])
    assert result.exit_code == 2
    assert flag in result.output


def test_the_new_knobs_come_from_a_job_spec(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(
        "input: {path: rows.jsonl}\n"
        "endpoint:\n"
        "  base_url: simulator\n"
        "  simulator:\n"
        "    rate_limit_style: gateway\n"
        "    close_after_stream: true\n"
        "    context_tokens: 8192\n"
        "    error_style: llamacpp\n"
        "    faults: {usage_as_strings: 0.1, trickle: 0.01, trickle_interval_s: 2,"
        " retry_after_s: 1}\n"
        "request: {model: m, messages: []}\n"
    )
    simulator = load_spec(job).endpoint.simulator
    assert simulator is not None
    assert (simulator.rate_limit_style, simulator.error_style) == ("gateway", "llamacpp")
    assert (simulator.close_after_stream, simulator.context_tokens) == (True, 8192)
    assert simulator.faults.usage_as_strings == 0.1
    assert (simulator.faults.trickle_interval_s, simulator.faults.retry_after_s) == (2, 1)


def test_the_key_comes_from_the_named_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIM_KEY", "sk-local")
    assert build_spec(SimulatorSpec(), {"api_key_env": "SIM_KEY"}).api_key == "sk-local"


def test_a_missing_key_variable_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    result = CliRunner().invoke(main, ["simulate", "--api-key-env", "NO_SUCH_KEY_VAR"])
    assert result.exit_code == 2
    assert "NO_SUCH_KEY_VAR is not set" in result.output


def test_a_busy_port_is_a_usage_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(main, ["simulate", "--port", str(port)])
    assert result.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.output


def test_settings_come_from_a_job_spec(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(
        "input: {path: rows.jsonl}\n"
        "endpoint: {base_url: simulator, simulator: {rpm: 7, faults: {http_500: 0.5}}}\n"
        "request: {model: m, messages: []}\n"
    )
    result = CliRunner().invoke(
        main, ["simulate", "--job", str(job), "--api-key-env", "UNSET_VAR_X"]
    )
    assert result.exit_code == 2  # got past reading the job, stopped at the key


@pytest.mark.slow
def test_serves_until_interrupted() -> None:
    env = {**os.environ, "SIM_TEST_KEY": "sk-sub"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "batchchat",
            "simulate",
            "--port",
            "0",
            "--rpm",
            "600",
            "--api-key-env",
            "SIM_TEST_KEY",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        request = urllib.request.Request(
            base_url + "/chat/completions",
            data=json.dumps(
                {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            ).encode(),
            headers={"Authorization": "Bearer sk-sub", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
            assert response.headers["x-ratelimit-limit-requests"] == "600"
            assert json.load(response)["choices"][0]["message"]["content"]
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert "sk-sub" not in stderr
