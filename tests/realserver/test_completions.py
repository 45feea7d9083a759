"""Plain completions, seeds, ``n`` and ``samples``: batchchat's result columns must say what
the raw server says for the same body (``batchchat plan --out`` gives the exact bodies)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from tests.realserver import _jobs as jobs
from tests.realserver._compare import assert_same, raw_by_id, raw_view, result_view
from tests.realserver._servers import LITELLM, LLAMA, Server, require

pytestmark = pytest.mark.realserver


@pytest.mark.parametrize("server", [LLAMA, LITELLM], ids=["llama-server", "litellm"])
def test_plain_completions_equal_the_raw_server(tmp_path: Path, server: Server) -> None:
    require(server)
    name = jobs.write_input(tmp_path, jobs.prompts(24), "csv")
    spec = jobs.job_spec(server, name, request={"seed": 7}, limits={"max_concurrency": 8})
    bodies = jobs.planned_bodies(tmp_path, spec)
    run = jobs.run(tmp_path, spec, key=server.key)
    assert run.code == 0, run.out
    df = jobs.results(tmp_path)
    assert df.height == 24 and (df["status"] == "ok").all()
    assert_same(result_view(df), raw_view(raw_by_id(server, bodies)))


def test_per_row_seeds_reproduce_across_runs(tmp_path: Path, llama: Server) -> None:
    name = jobs.write_input(tmp_path, jobs.prompts(30), "parquet")
    spec = jobs.job_spec(
        llama, name, request={"temperature": 1.0}, seed={"base": 1, "per_row": True}
    )
    runs = [jobs.run(tmp_path, spec, "--new-output", str(tmp_path / o)) for o in ("a", "b")]
    assert [r.code for r in runs] == [0, 0], [r.out for r in runs]
    a, b = (jobs.results(tmp_path, o).sort("row_id") for o in ("a", "b"))
    assert a["seed"].n_unique() == 30 and a["seed"].to_list() == b["seed"].to_list()
    assert_same(result_view(b), result_view(a))
    bodies = jobs.planned_bodies(tmp_path, spec)
    assert_same(result_view(a), raw_view(raw_by_id(llama, bodies)))


def test_n_2_gives_both_choices_as_the_raw_server(tmp_path: Path, llama: Server) -> None:
    name = jobs.write_input(tmp_path, jobs.prompts(12))
    spec = jobs.job_spec(llama, name, request={"n": 2, "temperature": 1.0, "seed": 3})
    bodies = jobs.planned_bodies(tmp_path, spec)
    run = jobs.run(tmp_path, spec)
    assert run.code == 0, run.out
    df = jobs.results(tmp_path)
    assert (df["status"] == "ok").all()
    raw = raw_by_id(llama, bodies)
    got = {
        f"{r['row_id']}#{r['sample']}": [(c["content"], c["finish_reason"]) for c in r["choices"]]
        for r in df.iter_rows(named=True)
    }
    want = {
        cid: [(c["message"]["content"], c["finish_reason"]) for c in a["choices"]]
        for cid, a in raw.items()
    }
    assert all(len(v) == 2 for v in want.values())
    assert_same(got, want)
    assert_same(result_view(df), raw_view(raw))


def test_samples_3_gives_three_seeded_answers_per_row(tmp_path: Path, llama: Server) -> None:
    name = jobs.write_input(tmp_path, jobs.prompts(10))
    spec = jobs.job_spec(
        llama, name, request={"temperature": 1.0}, samples=3, seed={"base": 5, "per_row": True}
    )
    bodies = jobs.planned_bodies(tmp_path, spec)
    run = jobs.run(tmp_path, spec)
    assert run.code == 0, run.out
    df = jobs.results(tmp_path)
    assert df.height == 30 and (df["status"] == "ok").all()
    assert (
        sorted(df.group_by("row_id").agg(pl.col("sample").sort())["sample"].to_list())
        == [[0, 1, 2]] * 10
    )
    assert df["seed"].n_unique() == 30
    assert_same(result_view(df), raw_view(raw_by_id(llama, bodies)))
