"""Errors every request would repeat, and one row the server cannot take: a run must stop
early with a clear message and a documented exit code, and error rows must be typed."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.realserver import _jobs as jobs
from tests.realserver._servers import Server

pytestmark = pytest.mark.realserver


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_prompt_over_the_context_is_a_context_length_error(tmp_path: Path, llama: Server) -> None:
    rows = jobs.prompts(3)
    rows[1]["text"] = "weather report " * 6000  # ~48,000 tokens; llama-server runs with -c 8192
    spec = jobs.job_spec(llama, jobs.write_input(tmp_path, rows))
    run = jobs.run(tmp_path, spec)
    assert run.code == 1, run.out[-2000:]
    df = jobs.results(tmp_path).sort("row_id")
    assert df["status"].to_list() == ["ok", "error", "ok"]
    big = df.row(1, named=True)
    print({k: big[k] for k in ("error_type", "http_status", "attempts", "error_message")})
    assert (big["http_status"], big["attempts"]) == (400, 1)
    assert big["error_type"] == "ContextLengthError", big["error_message"]


def test_wrong_key_stops_the_run_fast(tmp_path: Path, litellm: Server) -> None:
    spec = jobs.job_spec(litellm, jobs.write_input(tmp_path, jobs.prompts(300)))
    spec["limits"] = {"max_concurrency": 16}
    run = jobs.run(tmp_path, spec, key="sk-wrong-key-0000")
    sent = jobs.report(tmp_path)["requests"]
    print(f"exit {run.code} in {run.wall_s:.1f} s; {sent}\n{run.out[-1500:]}")
    assert run.code == 1, "a rejected key is documented as exit 1"
    assert sent["sent"] <= 32, f"{sent['sent']} requests sent with a key the server rejects"
    assert "No connected db" in run.out, "the server's own words should reach the user"


def test_nothing_listening_stops_early_naming_base_url(tmp_path: Path) -> None:
    base_url = f"http://127.0.0.1:{closed_port()}/v1"
    name = jobs.write_input(tmp_path, jobs.prompts(200))
    spec = jobs.job_spec(Server("closed", "", "", "tiny", ""), name)
    spec["endpoint"]["base_url"] = base_url
    run = jobs.run(tmp_path, spec, timeout=300)
    print(f"exit {run.code} in {run.wall_s:.1f} s\n{run.out[-1500:]}")
    assert run.code in (1, 2), run.out[-2000:]
    assert run.wall_s < 15, f"took {run.wall_s:.0f} s to give up on a closed port"
    assert base_url in run.out, "the message should name the base_url that is unreachable"
