"""jobs/cascade_cheap.yaml then jobs/cascade_strong.yaml, end to end through the CLI.

The second job reads the first one's output directory: only the rows whose label
confidence is below 0.6, with the first job's row ids and columns. A resume of the
second job goes on when the first only gained rows, and refuses, saying so, when the
first was run again.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from click.testing import CliRunner, Result

import batchchat
from batchchat.cli import main

ROOT = Path(__file__).resolve().parents[2]
CHEAP = ROOT / "jobs" / "cascade_cheap.yaml"
STRONG = ROOT / "jobs" / "cascade_strong.yaml"


def run(job: Path, out: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["run", str(job), "-q", "--var", f"out={out}", *args])


def test_the_unsure_rows_go_to_the_stronger_model(tmp_path: Path) -> None:
    assert run(CHEAP, tmp_path).exit_code == 0
    result = run(STRONG, tmp_path)
    assert result.exit_code == 0, result.output

    cheap = batchchat.read_results(tmp_path / "cheap")
    strong = batchchat.read_results(tmp_path / "strong")
    unsure = cheap.filter(pl.col("label_confidence") < 0.6)
    assert cheap.height == 200 and 0 < strong.height < 200
    assert sorted(strong["row_id"]) == sorted(unsure["row_id"])
    assert set(strong["model"]) == {"gpt-4o"} and set(cheap["model"]) == {"gpt-4o-mini"}
    joined = strong.join(unsure, on="row_id", suffix="_cheap")
    assert (joined["text"] == joined["text_cheap"]).all()  # the kept column came through
    assert (strong["status"] == "ok").all() and strong["label"].is_not_null().all()
    # the final label of each review: the strong model's where it was asked
    final = cheap.join(strong.select("row_id", "label"), on="row_id", how="left", suffix="_strong")
    final = final.with_columns(pl.coalesce("label_strong", "label").alias("final"))
    assert final["final"].is_not_null().all()


def test_a_resume_goes_on_when_the_upstream_gained_rows(tmp_path: Path) -> None:
    assert run(CHEAP, tmp_path, "--limit", "100").exit_code == 0
    assert run(STRONG, tmp_path).exit_code == 0
    before = batchchat.read_results(tmp_path / "strong").height
    assert run(CHEAP, tmp_path).exit_code == 0  # resumed: rows 100-199 added
    result = run(STRONG, tmp_path)
    assert result.exit_code == 0, result.output
    after = batchchat.read_results(tmp_path / "strong")
    unsure = batchchat.read_results(tmp_path / "cheap").filter(pl.col("label_confidence") < 0.6)
    assert before < after.height == unsure.height


def test_a_resume_refuses_when_the_upstream_ran_again(tmp_path: Path) -> None:
    assert run(CHEAP, tmp_path).exit_code == 0
    assert run(STRONG, tmp_path).exit_code == 0
    assert run(CHEAP, tmp_path, "--force").exit_code == 0  # every answer is new
    result = run(STRONG, tmp_path)
    assert result.exit_code == 2
    assert "holds results made from other input rows" in result.output
    assert "changed since the last run (that job ran again)" in result.output
    assert "--force" in result.output
    assert run(STRONG, tmp_path, "--force").exit_code == 0
