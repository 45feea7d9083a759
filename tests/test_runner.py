"""The runner end to end: planner → executor → sink → report against the simulator over HTTP.

Each test writes a small JSONL input and a job spec to a temp dir, points the job at a
simulator on 127.0.0.1 and reads the Parquet back with polars; the simulator's /stats
proves what was (and was not) sent.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pyarrow.parquet as pq
import pytest

import batchchat
from batchchat.errors import DiskFullError, InputError, LockedError, ResumeError, SpecError
from batchchat.results.status import read_status
from batchchat.runner import RunOptions, run_job
from batchchat.simulator import SimulatorServer
from batchchat.spec import JobSpec, load_spec
from tests._specs import label_job, merge_sections
from tests._system import tmpfs
from tests.conftest import SimulatorFactory

SECRET = "sk-runner-test-5ecret-value"


def write_rows(path: Path, count: int) -> Path:
    lines = [
        orjson.dumps({"id": f"r{i:03d}", "text": f"review number {i} about item {i * 7}"})
        for i in range(count)
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def append_lines(path: Path, *lines: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(b"".join(line + b"\n" for line in lines))


def job(tmp_path: Path, base_url: str, rows: int = 20, **extra: Any) -> JobSpec:
    data = write_rows(tmp_path / "rows.jsonl", rows)
    spec = label_job("t", data, base_url, tmp_path / "out", retry={"max_attempts": 4})
    return load_spec(merge_sections(spec, extra))


async def test_every_row_gets_its_own_answer_once(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    spec = job(tmp_path, simulator.base_url)
    outcome = await run_job(spec)
    df = batchchat.read_results(spec.output_dir)
    assert outcome.exit_code == 0
    assert df.height == 20
    assert df["status"].unique().to_list() == ["ok"]
    assert df["content"].n_unique() == 20  # each row its own answer
    assert sorted(df["row_id"].to_list()) == [f"r{i:03d}" for i in range(20)]
    assert df["text"].str.starts_with("review number").all()
    stats = simulator.stats()
    assert sum(stats["answers"].values()) == 20
    assert set(stats["answers"].values()) == {1}
    assert (spec.output_dir / "report.json").exists()


async def test_rerun_of_a_finished_job_sends_nothing(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    spec = job(tmp_path, simulator.base_url)
    await run_job(spec)
    before = simulator.stats()["requests"]
    outcome = await run_job(spec)
    assert simulator.stats()["requests"] == before
    assert outcome.stats.skipped == 20
    assert outcome.stats.requests_sent == 0
    assert outcome.exit_code == 0
    assert batchchat.read_results(spec.output_dir).height == 20


async def test_faults_are_retried_and_nothing_is_lost_or_duplicated(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    sim = await simulator_factory(
        faults={"http_500": 0.15, "http_503": 0.1, "drop": 0.05, "truncate": 0.05, "seed": 7}
    )
    spec = job(tmp_path, sim.base_url, rows=60, retry={"max_attempts": 8})
    outcome = await run_job(spec)
    df = pl.scan_parquet(spec.output_dir / "results" / "*.parquet").collect()
    stats = sim.stats()
    assert outcome.exit_code == 0
    assert df.height == 60 and df["row_id"].n_unique() == 60
    assert (df["status"] == "ok").all()
    assert sum(stats["faults"].values()) > 0  # the faults really happened
    assert outcome.stats.retries >= sum(stats["faults"].values())
    assert sorted(stats["answers"].values()) == [1] * 60  # answered exactly once each
    assert df["attempts"].max() > 1


async def test_non_retryable_errors_are_rows_and_exit_1(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    # top_logprobs without logprobs is a 400 on every request: recorded after one attempt
    spec = job(tmp_path, simulator.base_url, rows=5)
    spec = load_spec({**spec.model_dump(), "request": {**spec.request, "top_logprobs": 2}})
    outcome = await run_job(spec)
    df = batchchat.read_results(spec.output_dir)
    assert outcome.exit_code == 1
    assert (df["status"] == "error").all()
    assert df["http_status"].unique().to_list() == [400]
    assert df["attempts"].unique().to_list() == [1]
    assert df["error_type"].unique().to_list() == ["ClientError"]
    assert df["error_message"].str.contains("logprobs").all()
    assert outcome.report.rows_error == 5


async def test_a_row_written_twice_is_caught_when_a_run_ends(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    # what a bug writing answers twice would leave: every key of a part once more, later
    spec = job(tmp_path, simulator.base_url, rows=12)
    await run_job(spec)
    results = spec.output_dir / "results"
    parts = sorted(results.glob("part-*.parquet"))
    twice = pq.read_table(parts[0]).slice(0, 5)
    pq.write_table(twice, results / "part-00099.parquet")
    outcome = await run_job(spec)
    assert outcome.stats.requests_sent == 0
    on_disk = pl.read_parquet(results / "*.parquet")
    assert on_disk.height == 12
    assert on_disk["row_id"].n_unique() == 12
    assert outcome.report.rows_total == 12


async def test_failed_rows_are_retried_on_rerun_and_superseded(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    flaky = await simulator_factory(faults={"http_500": 1.0})
    spec = job(tmp_path, flaky.base_url, rows=6, retry={"max_attempts": 1})
    first = await run_job(spec)
    assert first.exit_code == 1
    healthy = await simulator_factory()
    spec = load_spec({**spec.model_dump(), "endpoint": {"base_url": healthy.base_url}})
    with pytest.raises(ResumeError, match="base_url"):  # a different endpoint is a changed spec
        await run_job(spec)
    second = await run_job(spec, RunOptions(force=True))
    assert second.exit_code == 0
    raw = pl.scan_parquet(spec.output_dir / "results" / "*.parquet").collect()
    assert raw.height == 6 and (raw["status"] == "ok").all()
    assert any((spec.output_dir / "superseded").iterdir())  # old parts moved aside, not deleted


async def test_no_retry_failed_leaves_failed_rows_alone(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    sim = await simulator_factory(faults={"http_500": 1.0})
    spec = job(tmp_path, sim.base_url, rows=4, retry={"max_attempts": 1})
    await run_job(spec)
    sent = sim.stats()["requests"]
    again = await run_job(spec, RunOptions(retry_failed=False))
    assert sim.stats()["requests"] == sent
    assert again.stats.skipped == 4
    retried = await run_job(spec)
    assert sim.stats()["requests"] == sent + 4
    assert retried.report.rows_error == 4


async def test_wrong_key_stops_the_run_and_never_leaks(
    simulator_factory: SimulatorFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = await simulator_factory(api_key="the-right-key")
    monkeypatch.setenv("BATCHCHAT_TEST_KEY", SECRET)
    spec = job(
        tmp_path,
        sim.base_url,
        rows=200,
        endpoint={"api_key_env": "BATCHCHAT_TEST_KEY"},
        limits={"max_concurrency": 4},
    )
    outcome = await run_job(spec)
    assert outcome.exit_code == 1
    assert outcome.fatal_error is not None and "AuthenticationError" in outcome.fatal_error
    assert sim.stats()["requests"] < 200  # stopped early instead of failing every row
    for path in spec.output_dir.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


async def test_missing_key_variable_is_an_error_before_anything_is_sent(
    simulator: SimulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BATCHCHAT_UNSET_KEY", raising=False)
    spec = job(tmp_path, simulator.base_url, endpoint={"api_key_env": "BATCHCHAT_UNSET_KEY"})
    with pytest.raises(SpecError, match=r"\$BATCHCHAT_UNSET_KEY"):
        await run_job(spec)
    assert simulator.stats()["requests"] == 0
    # nothing written: `status` must not call the directory "partial"
    assert not spec.output_dir.exists()


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ({"labels": ["yes", "no", "Yes!"]}, "'yes' and 'Yes!' are the same label"),
        ({"keep_columns": ["text", "id"]}, ""),  # id is fine: it is not a result column
        ({"keep_columns": ["content"]}, "'content' is also the name of a result column"),
    ],
)
async def test_output_problems_fail_before_the_output_directory_is_touched(
    simulator: SimulatorServer, tmp_path: Path, output: dict[str, Any], message: str
) -> None:
    spec = job(tmp_path, simulator.base_url, output=output)
    if output.get("keep_columns") == ["content"]:
        rows = [orjson.dumps({"id": f"r{i}", "text": "t", "content": "c"}) for i in range(3)]
        (tmp_path / "rows.jsonl").write_bytes(b"\n".join(rows) + b"\n")
    if not message:
        assert (await run_job(spec)).exit_code == 0
        return
    with pytest.raises(SpecError, match=re.escape(message)):
        await run_job(spec)
    assert not spec.output_dir.exists()
    assert simulator.stats()["requests"] == 0


async def test_budget_stops_sending_and_keeps_what_finished(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    spec = job(
        tmp_path,
        simulator.base_url,
        rows=100,
        pricing={"gpt-4o-mini": {"input": 1000.0, "output": 1000.0}},
        budget={"max_cost_usd": 0.5},
        limits={"max_concurrency": 2},
    )
    outcome = await run_job(spec)
    df = batchchat.read_results(spec.output_dir)
    assert outcome.exit_code == 3
    assert outcome.stats.stop_reason == "budget"
    assert 0 < df.height < 100
    assert df["cost_usd"].sum() <= 0.5
    assert simulator.stats()["answered"] == df.height  # every answered request was kept


async def test_stop_event_drains_in_flight_and_loses_nothing(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    sim = await simulator_factory(latency={"mean_ms": 30})
    spec = job(tmp_path, sim.base_url, rows=400, limits={"max_concurrency": 8})
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, stop.set)
    outcome = await run_job(spec, stop=stop)
    df = batchchat.read_results(spec.output_dir)
    assert outcome.exit_code == 130
    assert 0 < df.height < 400
    assert sim.stats()["answered"] == df.height  # in-flight answers were drained into results
    rest = await run_job(spec)
    assert rest.exit_code == 0
    final = batchchat.read_results(spec.output_dir)
    assert final.height == 400 and final["row_id"].n_unique() == 400
    assert sorted(sim.stats()["answers"].values()) == [1] * 400


async def test_second_run_on_a_locked_directory_is_refused(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    from batchchat.results.outdir import open_output

    spec = job(tmp_path, simulator.base_url)
    with (
        open_output(spec.output_dir, spec),
        pytest.raises(LockedError, match="being written by another batchchat run"),
    ):
        await run_job(spec)
    assert simulator.stats()["requests"] == 0


async def test_skipped_bad_lines_are_in_the_report(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    spec = job(tmp_path, simulator.base_url, rows=5, input={"on_bad_line": "skip"})
    append_lines(Path(spec.input.path), b'{"id": "r999", "text": ', b'{"id": "r998", "text": "ok"}')
    outcome = await run_job(spec)
    assert outcome.exit_code == 0
    assert [(i.line, i.path.endswith("rows.jsonl")) for i in outcome.issues] == [(6, True)]
    report = orjson.loads((spec.output_dir / "report.json").read_bytes())
    assert report["input_issues"]["skipped_lines"] == 1
    assert report["input_issues"]["examples"][0]["line"] == 6
    assert any("malformed input line" in w for w in report["warnings"])
    assert batchchat.read_results(spec.output_dir).height == 6


async def test_a_row_a_template_fails_on_mid_run_is_an_error_row_and_the_rest_is_kept(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    # validate renders only the first rows; row 45's null `meta` breaks the template later
    spec = job(
        tmp_path,
        simulator.base_url,
        request={"messages": [{"role": "user", "content": "{{ text }} {{ meta.x }}"}]},
    )
    rows = [
        orjson.dumps({"id": f"r{i:03d}", "text": f"t{i}", "meta": None if i == 45 else {"x": i}})
        for i in range(60)
    ]
    (tmp_path / "rows.jsonl").write_bytes(b"\n".join(rows) + b"\n")  # replaces job()'s rows
    outcome = await run_job(spec)
    df = batchchat.read_results(spec.output_dir)
    assert outcome.exit_code == 1
    assert df.height == 60
    failed = df.filter(pl.col("status") == "error")
    assert failed["row_id"].to_list() == ["r045"]
    assert failed["error_type"].to_list() == ["TemplateError"]
    assert "meta" in failed["error_message"][0] and "r045" in failed["error_message"][0]
    assert failed["attempts"].to_list() == [0]
    assert failed["text"].to_list() == ["t45"]  # keep_columns survive
    assert sum(simulator.stats()["answers"].values()) == 59  # the bad row was never sent
    assert outcome.report.rows_error == 1 and outcome.report.rows_ok == 59


async def test_a_request_too_large_fails_its_row_only_and_the_run_goes_on(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    sim = await simulator_factory(tpm=2_000)
    spec = job(tmp_path, sim.base_url, rows=10)
    # row r003 alone asks for more tokens than the whole per-minute limit
    rows = [
        orjson.dumps({"id": f"r{i:03d}", "text": "word " * (3_000 if i == 3 else 3)})
        for i in range(10)
    ]
    (tmp_path / "rows.jsonl").write_bytes(b"\n".join(rows) + b"\n")
    outcome = await run_job(spec)
    df = batchchat.read_results(spec.output_dir)
    assert outcome.fatal_error is None
    assert outcome.stats.stop_reason == "completed"
    assert outcome.exit_code == 1
    failed = df.filter(pl.col("status") == "error")
    assert failed.select("row_id", "error_type", "http_status", "attempts").rows() == [
        ("r003", "RequestTooLargeError", 429, 1)
    ]
    assert df.filter(pl.col("status") == "ok").height == 9


def test_a_whole_run_never_imports_pandas(tmp_path: Path) -> None:
    # pyarrow imports pandas (~0.3 s) when it converts Python values; the sink goes via polars
    job(tmp_path, "simulator", rows=5)  # writes the rows
    script = textwrap.dedent(
        f"""
        import sys
        import batchchat
        report = batchchat.run({{
            "input": {{"path": {str(tmp_path / "rows.jsonl")!r}, "id_column": "id"}},
            "endpoint": {{"base_url": "simulator"}},
            "request": {{
                "model": "gpt-4o-mini",
                "messages": [{{"role": "user", "content": "{{{{ text }}}}"}}],
                "logprobs": True, "top_logprobs": 2,
            }},
            "output": {{"path": {str(tmp_path / "out")!r}, "keep_columns": ["text"],
                        "labels": ["yes", "no"]}},
        }})
        assert report.rows_ok == 5, report
        print("pandas" in sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"
    df = batchchat.read_results(tmp_path / "out")
    assert df["label_probs"].struct.fields == ["yes", "no"] and df.height == 5


async def test_duplicate_ids_fail_before_the_output_directory_is_touched(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    spec = job(tmp_path, simulator.base_url, rows=5)
    append_lines(tmp_path / "rows.jsonl", orjson.dumps({"id": "r002", "text": "again"}))
    with pytest.raises(InputError, match=r"'r002' occurs 2 times"):
        await run_job(spec)
    assert not spec.output_dir.exists()
    assert simulator.stats()["requests"] == 0


async def test_a_malformed_line_mid_run_keeps_what_was_answered_and_says_partial(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    sim = await simulator_factory(latency={"mean_ms": 20})
    spec = job(
        tmp_path,
        sim.base_url,
        rows=1_500,
        input={"id_column": None, "batch_size": 100},  # no id column: no early full read
        limits={"max_concurrency": 32},
    )
    # past the 1,024 requests the executor reads ahead, so some are answered before it
    lines = (tmp_path / "rows.jsonl").read_bytes().splitlines()
    lines[1_300] = b'{"id": "r1300", "text": '  # cut off mid-line
    (tmp_path / "rows.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(InputError, match=r"rows\.jsonl:1301:\d+: malformed JSON"):
        await run_job(spec)
    first = batchchat.read_results(spec.output_dir)
    answered = sum(sim.stats()["answers"].values())
    assert 0 < first.height == answered  # every answer the server gave is saved
    status = read_status(spec.output_dir)
    assert (status.state, status.stop_reason, status.exit_code) == ("partial", "error", 4)
    # the bad line skipped: the re-run sends only the rest, and no row is answered twice
    skipping = spec.model_copy(
        update={"input": spec.input.model_copy(update={"on_bad_line": "skip"})}
    )
    outcome = await run_job(skipping)
    assert outcome.exit_code == 0 and outcome.stats.skipped == first.height
    final = batchchat.read_results(spec.output_dir)
    assert final.height == 1_499 and final["row_id"].n_unique() == 1_499
    assert set(sim.stats()["answers"].values()) == {1}


async def test_a_full_disk_stops_sending_keeps_every_answer_and_a_rerun_finishes(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    sim = await simulator_factory(latency={"mean_ms": 5})
    disk = tmp_path / "disk"
    spec = job(
        tmp_path,
        sim.base_url,
        output={"path": str(disk / "out"), "part_rows": 50},
        limits={"max_concurrency": 8},
    )
    # rows whose kept text (24 kB each, hardly compressible) fill a small disk fast
    rows = [orjson.dumps({"id": f"r{i:03d}", "text": os.urandom(12_000).hex()}) for i in range(600)]
    (tmp_path / "rows.jsonl").write_bytes(b"\n".join(rows) + b"\n")
    with tmpfs(disk, size_mb=12) as resize:
        with pytest.raises(DiskFullError, match="is full: the run stops sending"):
            await run_job(spec)
        kept = batchchat.read_results(spec.output_dir)
        assert 0 < kept.height < 600
        # every answer that arrived is on disk: none was thrown away
        assert sim.stats()["answered"] == kept.height
        assert read_status(spec.output_dir).state == "partial"
        resize(200)  # space is freed: the same run again finishes, sending only the rest
        outcome = await run_job(spec)
        assert outcome.exit_code == 0
        assert batchchat.read_results(spec.output_dir).height == 600
        assert sorted(sim.stats()["answers"].values()) == [1] * 600


async def test_row_index_puts_results_back_in_input_order(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    spec = job(tmp_path, simulator.base_url, rows=30, samples=2)
    await run_job(spec)
    df = batchchat.read_results(spec.output_dir).sort("row_index", "sample")
    assert df["row_index"].dtype == pl.Int64
    assert df["row_id"].to_list() == [f"r{i:03d}" for i in range(30) for _ in range(2)]
    assert df["row_index"].to_list() == [i for i in range(30) for _ in range(2)]


async def test_parts_written_before_a_column_existed_still_read_and_resume(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    spec = job(tmp_path, simulator.base_url, rows=10)
    await run_job(spec.model_copy(update={"input": spec.input.model_copy(update={"limit": 4})}))
    results = spec.output_dir / "results"
    (part,) = sorted(results.glob("part-*.parquet"))
    old = pq.read_table(part)
    pq.write_table(old.drop_columns(["row_index"]), part)  # as an older batchchat wrote it
    outcome = await run_job(spec)
    assert outcome.stats.skipped == 4 and outcome.stats.results_ok == 6
    df = batchchat.read_results(spec.output_dir)
    assert df.height == 10 and (df["status"] == "ok").all()
    assert df.filter(pl.col("row_index").is_null())["row_id"].sort().to_list() == [
        "r000", "r001", "r002", "r003",
    ]  # fmt: skip
    assert sorted(
        pl.scan_parquet(results / "*.parquet", missing_columns="insert")
        .collect()["row_id"]
        .to_list()
    ) == sorted(df["row_id"].to_list())
