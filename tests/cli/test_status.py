"""``batchchat status DIR``: the state in words or JSON, and the exit code that says it."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from batchchat.cli import main
from batchchat.results.outdir import open_output
from tests._results import make_result, make_spec, server_error, write_parts
from tests.results.test_outdir import finish_run


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["status", *args])
    return result.exit_code, result.stdout, result.stderr


def make_dir(out: Path, failed: int, stop_reason: str | None) -> None:
    spec = make_spec()
    results = [make_result("1"), make_result("2")]
    results += [make_result(f"e{i}", error=server_error()) for i in range(failed)]
    with open_output(out, spec, run_id="r1") as opened:
        write_parts(opened.results_dir, spec, results)
        finish_run(out, "r1", stop_reason)


@pytest.mark.parametrize(
    ("failed", "stop_reason", "code", "text"),
    [
        (0, "completed", 0, "done — 2 ok, 0 failed"),
        (1, "completed", 1, "failed — 2 ok, 1 failed"),
        (0, "interrupted", 4, "partial — 2 ok, 0 failed; the last run (r1) was interrupted"),
        (0, None, 4, "partial — 2 ok, 0 failed; the last run (r1) did not finish"),
    ],
)
def test_states_and_exit_codes(
    tmp_path: Path, failed: int, stop_reason: str | None, code: int, text: str
) -> None:
    make_dir(tmp_path, failed, stop_reason)
    exit_code, stdout, _ = invoke(str(tmp_path))
    assert exit_code == code
    assert f"{tmp_path}: {text}" in stdout


def test_running(tmp_path: Path) -> None:
    make_dir(tmp_path, 0, "completed")
    with open_output(tmp_path, make_spec(), run_id="r2"):
        exit_code, stdout, _ = invoke(str(tmp_path))
        assert exit_code == 5
        assert f"running — 2 ok, 0 failed so far (pid {os.getpid()} on " in stdout
        assert "run r2" in stdout
    assert invoke(str(tmp_path))[0] == 4  # r2 opened the directory but saved no counters


def test_json(tmp_path: Path) -> None:
    make_dir(tmp_path, 1, "completed")
    exit_code, stdout, _ = invoke(str(tmp_path), "--json")
    assert exit_code == 1
    data = orjson.loads(stdout)
    assert data["state"] == "failed" and data["exit_code"] == 1
    assert (data["ok"], data["failed"]) == (2, 1)
    assert data["run_id"] == "r1" and data["stop_reason"] == "completed"
    assert data["holder"] is None and data["path"] == str(tmp_path)


def test_not_an_output_directory_exits_2(tmp_path: Path) -> None:
    exit_code, stdout, stderr = invoke(str(tmp_path / "nowhere"))
    assert exit_code == 2 and stdout == ""
    assert "is not a batchchat output directory (no manifest.json)" in stderr
