"""``batchchat report DIR``: formats, files, and a clear error for a wrong directory."""

from __future__ import annotations

from pathlib import Path

import orjson
from click.testing import CliRunner

from batchchat.cli import main
from tests.report.test_build import ok_row, sample_dir, write_results


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["report", *args])
    return result.exit_code, result.stdout, result.stderr


def test_json(tmp_path: Path) -> None:
    out = sample_dir(tmp_path)
    code, stdout, _ = invoke(str(out), "--format", "json")

    assert code == 0
    data = orjson.loads(stdout)
    assert data["rows"] == {"total": 9, "ok": 6, "error": 3, "skipped": 0, "samples_per_row": 1}
    assert data["requests"]["rate_limited"] == 3
    assert data["cost"]["complete"] is False
    assert data["job"] == "labels"
    assert not (out / "report.json").exists()  # printing does not write files


def test_markdown(tmp_path: Path) -> None:
    code, stdout, _ = invoke(str(sample_dir(tmp_path)), "--format", "md")

    assert code == 0
    assert stdout.startswith("# Run report: labels")
    assert "| Requests sent | 14 |" in stdout
    assert "## Most common errors (3 rows)" in stdout


def test_table_is_the_default(tmp_path: Path) -> None:
    code, stdout, _ = invoke(str(sample_dir(tmp_path)))

    assert code == 0
    assert "batchchat · labels" in stdout
    assert "Requests sent" in stdout
    assert "RequestTimeout" in stdout


def test_html_to_a_file_and_write_refreshes_the_reports(tmp_path: Path) -> None:
    out = sample_dir(tmp_path)
    target = tmp_path / "labels.html"
    code, _, stderr = invoke(str(out), "--format", "html", "-o", str(target), "--write")

    assert code == 0
    assert f"wrote {target}" in stderr
    assert 'id="chart-latency"' in target.read_text()
    written = orjson.loads((out / "report.json").read_bytes())
    assert written["rows"]["total"] == 9
    assert (out / "report.md").is_file() and (out / "report.html").is_file()


def test_a_partial_run_without_stats(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_results(out, [ok_row("1"), ok_row("2")])
    code, stdout, _ = invoke(str(out), "--format", "json")

    assert code == 0
    data = orjson.loads(stdout)
    assert data["rows"]["ok"] == 2
    assert data["warnings"] == ["no run stats found (runs/*.json): request counts are unknown"]


def test_a_directory_that_is_not_an_output_directory(tmp_path: Path) -> None:
    code, _, stderr = invoke(str(tmp_path))

    assert code == 2
    assert f"{tmp_path} is not a batchchat output directory" in stderr


def test_a_missing_directory(tmp_path: Path) -> None:
    code, _, stderr = invoke(str(tmp_path / "nope"))

    assert code == 2
    assert "does not exist" in stderr
