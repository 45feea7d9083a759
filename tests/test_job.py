"""Compiling a job: again in another process, for an input resolved and checked already."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from batchchat.errors import SpecError
from batchchat.job import compile_job, recompile_job
from batchchat.models import Usage
from batchchat.spec import load_spec

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
