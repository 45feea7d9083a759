"""Compiling a job: a chained input, its row ids and refusals; re-ask warnings; compiling
again in another process (the Ray engine), for an input resolved and checked already."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

import batchchat
from batchchat.errors import InputError, SpecError
from batchchat.job import compile_job, job_problems, recompile_job
from batchchat.models import Usage
from batchchat.runner import run_job
from batchchat.simulator import SimulatorServer
from batchchat.spec import load_spec
from tests.results.test_upstream import labelling_job
from tests.test_runner import write_rows


def downstream(tmp_path: Path, upstream: Path, **input_fields: Any) -> Any:
    return load_spec(
        {
            "name": "down",
            "input": {"path": str(upstream), **input_fields},
            "request": {"model": "m", "messages": [{"role": "user", "content": "{{ content }}"}]},
            "output": {"path": str(tmp_path / "down")},
        }
    )


async def test_a_chained_input_takes_the_upstream_row_ids(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    up = labelling_job(tmp_path, simulator.base_url, rows=5)
    await run_job(up)
    job = compile_job(downstream(tmp_path, up.output_dir, where="status = 'ok'"))
    assert job.spec.input.id_column == "row_id"
    assert job.upstream is not None and job.upstream.record.summary()["rows"] == 5
    assert job.plan.source.format == "results"
    requests = list(job.plan.requests())
    assert sorted(r.row_id for r in requests) == [f"r{i:03d}" for i in range(5)]
    named = compile_job(downstream(tmp_path, up.output_dir, id_column="text"))
    assert named.spec.input.id_column == "text"


async def test_several_samples_upstream_need_one_chosen(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    up = labelling_job(tmp_path, simulator.base_url, rows=3, samples=2)
    await run_job(up)
    with pytest.raises(InputError, match=r"read one sample with input.where: sample = 0"):
        compile_job(downstream(tmp_path, up.output_dir))
    assert compile_job(downstream(tmp_path, up.output_dir, where="sample = 0")).upstream


def test_where_on_a_file_or_a_missing_directory_is_a_problem(tmp_path: Path) -> None:
    data = write_rows(tmp_path / "rows.jsonl", 2)
    problems = job_problems(downstream(tmp_path, data, where="x = 1"))
    assert problems == [
        f"  input.where: filters the results of a batchchat output directory, and input.path "
        f"{data} is not one"
    ]
    missing = job_problems(downstream(tmp_path, tmp_path / "nope", where="x = 1"))
    assert len(missing) == 1 and "run that job first" in missing[0]


async def test_a_job_cannot_read_its_own_output(simulator: SimulatorServer, tmp_path: Path) -> None:
    up = labelling_job(tmp_path, simulator.base_url, rows=2)
    await run_job(up)
    spec = up.model_copy(update={"input": up.input.model_copy(update={"path": str(up.output_dir)})})
    with pytest.raises(SpecError, match="is this job's own output directory"):
        compile_job(spec)


@pytest.mark.parametrize(
    ("output", "request_extra", "expected"),
    [
        ({"reask": 2}, {}, "only answers cut by the token limit are asked again"),
        (
            {"parse": "json", "reask": {"count": 1, "repair": False}},
            {"temperature": 0},
            "a model will most likely answer the same",
        ),
    ],
)
def test_reask_settings_that_will_not_do_what_they_seem_are_warned(
    tmp_path: Path, output: dict[str, Any], request_extra: dict[str, Any], expected: str
) -> None:
    data = write_rows(tmp_path / "rows.jsonl", 2)
    spec = load_spec(
        {
            "input": {"path": str(data)},
            "request": {
                "model": "m",
                "messages": [{"role": "user", "content": "x"}],
                **request_extra,
            },
            "output": {"path": str(tmp_path / "o"), **output},
        }
    )
    assert any(expected in warning for warning in compile_job(spec).warnings)
    quiet = spec.model_copy(update={"output": spec.output.model_copy(update={"reask": None})})
    assert not any("reask" in warning for warning in compile_job(quiet).warnings)


def test_the_api_validates_a_chained_job(tmp_path: Path) -> None:
    assert batchchat.validate(
        {
            "input": {"path": str(tmp_path), "where": "a = 1"},
            "request": {"model": "m", "messages": []},
        }
    )


JOBS = Path(__file__).resolve().parents[1] / "jobs"


@pytest.mark.parametrize("name", ["labeling.yaml", "extract_json.yaml", "samples_seeded.yaml"])
def test_a_job_compiled_again_from_what_travels_plans_the_same(name: str) -> None:
    job = compile_job(load_spec(JOBS / name), require_key=False)
    spec, source = pickle.loads(pickle.dumps((job.spec, job.plan.source)))  # what a worker gets
    again = recompile_job(spec, source)
    assert again.columns.schema.equals(job.columns.schema)
    assert list(again.plan.requests()) == list(job.plan.requests())
    usage = Usage(prompt_tokens=1000, completion_tokens=100)
    assert again.prices.cost_usd("gpt-4o-mini", usage) == job.prices.cost_usd("gpt-4o-mini", usage)


def test_a_job_that_cannot_be_compiled_again_says_why() -> None:
    job = compile_job(load_spec(JOBS / "labeling.yaml"), require_key=False)
    output = job.spec.output.model_copy(update={"keep_columns": ["text", "status"]})
    clashing = job.spec.model_copy(update={"output": output})
    with pytest.raises(SpecError, match="cannot be compiled again"):
        recompile_job(clashing, job.plan.source)
