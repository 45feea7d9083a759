"""examples/analysis.py on small results of jobs/labeling.yaml produced by the CLI."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import polars as pl
import pytest
from click.testing import CliRunner

import batchchat
from batchchat.cli import main
from tests.examples._project import ROOT, derive_job, make_project

SCRIPT = ROOT / "examples" / "analysis.py"
ROWS = 5


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("analysis_example", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


analysis = load_example()


@pytest.fixture(scope="module")
def labeled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """jobs/labeling.yaml, the first ROWS reviews, 3 samples each, via `batchchat run`."""
    out = tmp_path_factory.mktemp("labeled") / "out"
    job = ROOT / "jobs" / "labeling.yaml"
    result = CliRunner().invoke(
        main, ["run", str(job), "--limit", str(ROWS), "--output", str(out), "-q"]
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def flaky(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same job against a simulator failing 40% of requests, each tried once."""
    project = make_project(tmp_path_factory.mktemp("flaky"), rows=ROWS)
    faults = "  base_url: simulator\n  simulator: {faults: {http_500: 0.4, seed: 3}}\n"
    job = derive_job(
        project,
        "flaky",
        {
            "  base_url: simulator\n": faults,
            "samples: 3\n": "samples: 3\nretry: {max_attempts: 1}\n",
            "../out/labeling/": "../out/flaky/",
        },
    )
    result = CliRunner().invoke(main, ["run", str(project / job), "-q"])
    assert result.exit_code == 1, result.output  # some rows failed
    return project / "out" / "flaky" / "manual"


def test_label_distribution_counts_each_rows_majority(labeled: Path) -> None:
    df = analysis.load(labeled)
    table = analysis.label_distribution(df)
    majority = df.filter(pl.col("sample") == 0).get_column("label_majority")
    expected = dict(majority.fill_null("(unmatched)").value_counts().iter_rows())
    assert dict(zip(table["label"], table["rows"], strict=True)) == expected
    assert table["rows"].sum() == ROWS
    assert table["share"].sum() == pytest.approx(1.0, abs=0.01)
    assert set(table["label"]) <= {"positive", "negative", "neutral", "(unmatched)"}


def test_confidence_histogram_has_every_bin_and_counts_every_answer(labeled: Path) -> None:
    df = analysis.load(labeled)
    histogram = analysis.confidence_histogram(df)
    assert histogram["from"].to_list() == [round(i / 10, 1) for i in range(10)]
    assert histogram["answers"].sum() == df["label_confidence"].drop_nulls().len() == ROWS * 3
    scores = df["label_confidence"].drop_nulls()
    top = ((scores >= 0.9) & (scores <= 1.0)).sum()
    assert histogram.filter(pl.col("from") == 0.9)["answers"].item() == top
    fullest = histogram.sort("answers", descending=True).row(0, named=True)
    assert fullest["bar"] == "#" * 40


def test_cost_and_latency_summaries_agree_with_the_report(labeled: Path) -> None:
    df = analysis.load(labeled)
    cost = analysis.cost_summary(df).row(0, named=True)
    report = json.loads((labeled / "report.json").read_text())
    assert cost["cost_usd"] == pytest.approx(report["cost"]["total_usd"])
    assert cost["rows"] == ROWS and cost["requests"] == ROWS * 3
    assert cost["usd_per_1k_rows"] == pytest.approx(cost["cost_usd"] / ROWS * 1000)
    assert cost["prompt_tokens"] == report["cost"]["by_model"]["gpt-4o-mini"]["tokens"]["prompt"]
    latency = analysis.latency_percentiles(df).row(0, named=True)
    assert latency["requests"] == ROWS * 3
    assert 0 < latency["p50_ms"] <= latency["p90_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert latency["max_ms"] == pytest.approx(df["latency_ms"].max())


def test_error_table_groups_the_failed_requests(flaky: Path) -> None:
    df = analysis.load(flaky)
    errors = analysis.error_table(df)
    failed = df.filter(pl.col("status") == "error").height
    assert 0 < failed < df.height
    assert errors.select("error_type", "http_status", "requests").rows() == [
        ("ServerError", 500, failed)
    ]
    assert errors["max_attempts"].item() == 1
    assert errors["example"].item()


def test_the_script_prints_every_section(labeled: Path, flaky: Path) -> None:
    for out, errors in ((labeled, "Errors\nnone"), (flaky, "ServerError")):
        done = subprocess.run(
            [sys.executable, str(SCRIPT), str(out), "--plot", str(out / "c.png")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        text = done.stdout
        ok = batchchat.read_results(out).filter(pl.col("status") == "ok").height
        assert text.startswith(f"{out}: {ROWS * 3} requests over {ROWS} rows, {ok} ok\n")
        for title in ("Labels (per row)", "Confidence of the given label", "Cost", "Latency"):
            assert f"\n{title}\n" in text
        assert errors in text
        drawn = importlib.util.find_spec("matplotlib") is not None
        assert (out / "c.png").exists() is drawn
