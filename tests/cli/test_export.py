"""``batchchat export DIR``: each format to a file or stdout, and clear errors."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import polars as pl
import pytest
from click.testing import CliRunner

from batchchat.cli import main
from tests.results.test_export import fill


def invoke(*args: str) -> tuple[int, bytes, str]:
    result = CliRunner().invoke(main, ["export", *args])
    return result.exit_code, result.stdout_bytes, result.stderr


def test_jsonl_to_stdout_by_default(tmp_path: Path) -> None:
    fill(tmp_path)
    code, stdout, _ = invoke(str(tmp_path))
    assert code == 0
    rows = [orjson.loads(line) for line in stdout.splitlines()]
    assert sorted(row["row_id"] for row in rows) == ["a", "b", "c", "d"]


@pytest.mark.parametrize("fmt", ["jsonl", "openai-batch", "csv"])
def test_each_format_to_a_file(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "out"
    fill(out)
    target = tmp_path / f"export.{fmt}"
    code, stdout, stderr = invoke(str(out), "--format", fmt, "-o", str(target))
    assert code == 0 and stdout == b""
    assert f"exported 4 row(s) from {out} to {target} ({fmt})" in stderr
    if fmt == "csv":
        frame = pl.read_csv(target)
        assert frame.height == 4 and "tool_calls" in frame.columns
    else:
        lines = [orjson.loads(line) for line in target.read_bytes().splitlines()]
        key = "custom_id" if fmt == "openai-batch" else "row_id"
        assert sorted(line[key] for line in lines) == (
            ["a#0", "b#0", "c#0", "d#0"] if fmt == "openai-batch" else ["a", "b", "c", "d"]
        )


def test_a_directory_without_results_exits_2(tmp_path: Path) -> None:
    code, _, stderr = invoke(str(tmp_path))
    assert code == 2
    assert f"{tmp_path} is not a batchchat output directory" in stderr


def test_an_unknown_format_is_a_usage_error(tmp_path: Path) -> None:
    fill(tmp_path)
    code, _, stderr = invoke(str(tmp_path), "--format", "xml")
    assert code == 2 and "'xml' is not one of" in stderr
    assert pl.read_ndjson(io.BytesIO(invoke(str(tmp_path))[1])).height == 4
