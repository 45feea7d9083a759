"""An output directory read as input: which rows, their columns, and refusals (real runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest

from batchchat.errors import InputError, SinkError
from batchchat.results.outdir import open_output
from batchchat.results.upstream import is_output_dir, open_upstream
from batchchat.runner import run_job
from batchchat.simulator import SimulatorServer
from batchchat.spec import JobSpec, load_spec
from tests.test_runner import write_rows

LABELS = ["positive", "negative", "neutral"]


def labelling_job(tmp_path: Path, base_url: str, rows: int = 30, **extra: Any) -> JobSpec:
    data = write_rows(tmp_path / "rows.jsonl", rows)
    spec: dict[str, Any] = {
        "name": "up",
        "input": {"path": str(data), "id_column": "id"},
        "endpoint": {"base_url": base_url, "timeout_s": 5},
        "request": {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "Answer with one of: positive, negative, neutral"},
                {"role": "user", "content": "{{ text }}"},
            ],
            "temperature": 0,
            "max_tokens": 4,
            "logprobs": True,
            "top_logprobs": 3,
        },
        "output": {"path": str(tmp_path / "up"), "keep_columns": ["text"], "labels": LABELS},
        "retry": {"max_attempts": 2, "max_wait_s": 0.05, "initial_wait_s": 0.01},
    }
    spec.update(extra)
    return load_spec(spec)


async def test_the_ok_rows_with_every_result_and_kept_column(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    spec = labelling_job(tmp_path, simulator.base_url)
    await run_job(spec)
    upstream = open_upstream(spec.output_dir)
    rows = upstream.rows.collect()
    assert rows.height == 30
    assert {"row_id", "text", "content", "label", "label_confidence", "parse_status"} <= set(
        rows.columns
    )
    assert upstream.record.answers.height == 30
    assert upstream.record.answers.columns == ["row_id", "sample", "run_id", "finished_at"]
    assert upstream.warnings == [] and not upstream.has_samples
    assert is_output_dir(spec.output_dir) and not is_output_dir(tmp_path)


async def test_where_keeps_the_rows_it_names(simulator: SimulatorServer, tmp_path: Path) -> None:
    spec = labelling_job(tmp_path, simulator.base_url)
    await run_job(spec)
    everything = open_upstream(spec.output_dir).rows.collect()
    unsure = open_upstream(spec.output_dir, "label_confidence < 0.6")
    expected = everything.filter(pl.col("label_confidence") < 0.6)
    assert 0 < expected.height < 30
    assert unsure.rows.collect()["row_id"].sort().to_list() == expected["row_id"].sort().to_list()
    assert unsure.record.summary()["rows"] == expected.height
    assert unsure.record.summary()["where"] == "label_confidence < 0.6"


async def test_a_filter_that_does_not_fit_the_results_names_itself(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    spec = labelling_job(tmp_path, simulator.base_url, rows=3)
    await run_job(spec)
    with pytest.raises(InputError, match=r"input.where: 'confidence < 0.6' cannot filter .*"):
        open_upstream(spec.output_dir, "confidence < 0.6")
    with pytest.raises(InputError, match=r"input.where: 'label > 3' cannot filter"):
        open_upstream(spec.output_dir, "label > 3")


async def test_failed_and_unfinished_upstream_rows_are_left_out_with_a_warning(
    simulator_factory: Any, tmp_path: Path
) -> None:
    sim = await simulator_factory(faults={"http_500": 0.3, "seed": 5})
    spec = labelling_job(tmp_path, sim.base_url, retry={"max_attempts": 1})
    await run_job(spec)
    upstream = open_upstream(spec.output_dir)
    failed = 30 - upstream.rows.collect().height
    assert failed > 0
    assert upstream.warnings == [
        f"input.path: {failed:,} rows of {spec.output_dir} failed there and are not read "
        "(re-run that job to retry them)"
    ]
    runs = spec.output_dir / "runs"
    for stats in runs.glob("*.json"):  # as a killed run leaves them: never finished
        stats.write_text(stats.read_text().replace('"finished_at": "', '"finished_at_": "'))
    partial = open_upstream(spec.output_dir)
    assert "did not finish" in partial.warnings[0]


async def test_a_directory_a_run_is_writing_is_refused(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    spec = labelling_job(tmp_path, simulator.base_url, rows=2)
    await run_job(spec)
    with (
        open_output(spec.output_dir, spec),
        pytest.raises(InputError, match="is being written by a run now"),
    ):
        open_upstream(spec.output_dir)


async def test_samples_are_noticed(simulator: SimulatorServer, tmp_path: Path) -> None:
    spec = labelling_job(tmp_path, simulator.base_url, rows=4, samples=2)
    await run_job(spec)
    upstream = open_upstream(spec.output_dir)
    assert upstream.has_samples
    assert upstream.rows.collect().height == 8


def test_results_that_cannot_be_read_are_said_so(tmp_path: Path) -> None:
    out = tmp_path / "broken"
    (out / "results").mkdir(parents=True)
    (out / "manifest.json").write_text('{"format": 2, "runs": []}')
    (out / "results" / "part-00000.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(SinkError, match="cannot read the results"):
        open_upstream(out)
