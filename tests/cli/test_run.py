"""`batchchat run` as users and schedulers meet it: exit codes, messages, JSON logs, signals,
SIGKILL at random moments, and a second run on a locked output directory."""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
import yaml
from click.testing import CliRunner

import batchchat
from batchchat.cli import main
from batchchat.simulator import SimulatorServer
from tests._specs import label_job, merge_sections
from tests.conftest import SimulatorFactory
from tests.test_runner import write_rows


def write_job(tmp_path: Path, base_url: str = "simulator", rows: int = 30, **extra: Any) -> Path:
    write_rows(tmp_path / "rows.jsonl", rows)
    spec = label_job("cli-job", "rows.jsonl", base_url, "out", output={"part_rows": 25})
    merge_sections(spec, extra)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_run_on_the_builtin_simulator_exits_0_and_writes_results(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["run", str(write_job(tmp_path))])
    assert result.exit_code == 0, result.output
    df = batchchat.read_results(tmp_path / "out")
    assert df.height == 30 and (df["status"] == "ok").all()
    assert "Requests sent" in result.output
    for name in ("report.json", "report.md", "report.html", "job.yaml", "manifest.json"):
        assert (tmp_path / "out" / name).exists(), name


def test_flags_override_the_spec(tmp_path: Path) -> None:
    job = write_job(tmp_path)
    result = CliRunner().invoke(
        main, ["run", str(job), "--limit", "7", "--output", str(tmp_path / "elsewhere"), "-q"]
    )
    assert result.exit_code == 0, result.output
    assert batchchat.read_results(tmp_path / "elsewhere").height == 7
    assert not (tmp_path / "out").exists()


def test_bad_spec_exits_2_with_file_line_and_field(tmp_path: Path) -> None:
    job = write_job(tmp_path)
    job.write_text(job.read_text().replace("max_concurrency", "x") + "limits: {rmp: 5}\n")
    result = CliRunner().invoke(main, ["run", str(job)])
    assert result.exit_code == 2
    assert f"{job}:" in result.output
    assert "limits.rmp: unknown key (did you mean 'rpm'?)" in result.output


def test_missing_column_exits_2_naming_the_column(tmp_path: Path) -> None:
    job = write_job(tmp_path)
    job.write_text(job.read_text().replace("{{ text }}", "{{ txet }}"))
    result = CliRunner().invoke(main, ["run", str(job)])
    assert result.exit_code == 2
    assert "txet" in result.output
    assert not (tmp_path / "out" / "results").exists() or not any(
        (tmp_path / "out" / "results").glob("*.parquet")
    )


def test_failed_rows_exit_1(tmp_path: Path) -> None:
    job = write_job(
        tmp_path, endpoint={"simulator": {"faults": {"http_500": 1.0}}}, retry={"max_attempts": 1}
    )
    result = CliRunner().invoke(main, ["run", str(job), "-q"])
    assert result.exit_code == 1
    assert (batchchat.read_results(tmp_path / "out")["status"] == "error").all()


def test_log_json_prints_only_json_events_on_stdout(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["run", str(write_job(tmp_path)), "--log-json"])
    assert result.exit_code == 0, result.output
    events = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert events[0]["event"] == "started"
    assert events[-1]["event"] == "report"
    assert {e["job"] for e in events} == {"cli-job"}
    assert len({e["run_id"] for e in events}) == 1
    assert events[-1]["report"]["rows"]["ok"] == 30


def test_var_partitions_the_output(tmp_path: Path) -> None:
    job = write_job(tmp_path, output={"path": "out/{{ vars.ds }}"})
    runner = CliRunner()
    for ds in ("2026-11-21", "2026-11-22"):
        result = runner.invoke(main, ["run", str(job), "--var", f"ds={ds}", "-q"])
        assert result.exit_code == 0, result.output
    assert batchchat.read_results(tmp_path / "out" / "2026-11-21").height == 30
    assert batchchat.read_results(tmp_path / "out" / "2026-11-22").height == 30
    missing = runner.invoke(main, ["run", str(job), "-q"])
    assert missing.exit_code == 2
    assert "--var" in missing.output


def test_a_scheduled_rerun_sends_nothing_and_status_follows_each_date(tmp_path: Path) -> None:
    def run(ds: str, *args: str, faulty: bool = False) -> Any:
        faults = {"simulator": {"faults": {"http_500": 1.0 if faulty else 0.0}}}
        job = write_job(tmp_path, output={"path": "out/{{ vars.ds }}"}, endpoint=faults)
        return CliRunner().invoke(main, ["run", str(job), "--var", f"ds={ds}", *args])

    def status(ds: str) -> tuple[int, str]:
        result = CliRunner().invoke(main, ["status", str(tmp_path / "out" / ds)])
        return result.exit_code, result.stdout

    assert run("2026-11-21", "-q").exit_code == 0
    again = run("2026-11-21")  # the scheduler retries a date that already succeeded
    assert again.exit_code == 0
    assert "Nothing to send: all 30 requests were already done." in again.stderr
    logged = run("2026-11-21", "--log-json")
    events = {e["event"]: e for e in map(orjson.loads, logged.stdout.splitlines())}
    assert (events["finished"]["requests_sent"], events["finished"]["skipped"]) == (0, 30)
    assert events["report"]["exit_code"] == 0
    assert status("2026-11-21") == (
        0,
        f"{tmp_path / 'out' / '2026-11-21'}: done — 30 ok, 0 failed\n",
    )
    # a date whose requests fail: exit 1, and the run stops once its first 20 requests all
    # failed alike; status says partial until a re-run sends the failed rows again
    assert run("2026-11-22", "-q", faulty=True).exit_code == 1
    code, text = status("2026-11-22")
    # (those in flight when it stopped finish too, so 20 or more have failed)
    assert code == 4 and re.search(r"partial — 0 ok, (2\d|30) failed", text), text
    assert "stopped early: the first 20 requests all failed with ServerError (HTTP 500)" in text
    assert run("2026-11-22", "-q").exit_code == 0
    assert status("2026-11-22")[0] == 0
    assert (
        batchchat.read_results(tmp_path / "out" / "2026-11-22")["status"].to_list() == ["ok"] * 30
    )
    assert status("2026-11-21")[0] == 0  # the other partition is untouched


def test_dry_run_uses_the_simulator_instead_of_the_endpoint(tmp_path: Path) -> None:
    # an endpoint that does not exist and a key that is not set: a dry run needs neither
    job = write_job(
        tmp_path, base_url="http://127.0.0.1:9/v1", endpoint={"api_key_env": "BATCHCHAT_NEVER_SET"}
    )
    result = CliRunner().invoke(main, ["run", str(job), "--dry-run", "-q"])
    assert result.exit_code == 0, result.output
    # beside the real output, never in it: a real run must not resume the simulator's answers
    assert batchchat.read_results(tmp_path / "out-dry-run").height == 30
    assert not (tmp_path / "out").exists()


def test_a_real_run_refuses_to_resume_a_rehearsal_in_the_same_directory(tmp_path: Path) -> None:
    job = write_job(tmp_path)
    out = str(tmp_path / "shared")
    rehearsal = CliRunner().invoke(main, ["run", str(job), "--dry-run", "-q", "-o", out])
    assert rehearsal.exit_code == 0, rehearsal.output
    real = CliRunner().invoke(main, ["run", str(job), "-q", "-o", out])
    assert real.exit_code == 2
    assert "holds the simulator's answers (a --dry-run)" in real.stderr
    assert "--force" in real.stderr
    # --force moves the rehearsal aside and the real run sends every row
    forced = CliRunner().invoke(main, ["run", str(job), "-q", "-o", out, "--force"])
    assert forced.exit_code == 0, forced.output
    assert batchchat.read_results(Path(out)).height == 30
    assert list((Path(out) / "superseded").iterdir())


# -- real processes: signals, SIGKILL, locks -----------------------------------------------------


async def start_run(job: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "batchchat",
        "run",
        str(job),
        "-q",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


def count_parts(results: Path) -> int:
    return len(list(results.glob("part-*.parquet")))


async def wait_until(condition: Callable[[], bool], what: str, limit_s: float = 20.0) -> None:
    """Poll a file written by another process: there is nothing in this process to await."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not condition():
        assert loop.time() < deadline, f"{what} did not happen within {limit_s}s"
        await asyncio.sleep(0.05)


async def wait_for_parts(results: Path, at_least: int = 1) -> None:
    await wait_until(lambda: count_parts(results) >= at_least, f"{at_least} part(s) written")


async def test_sigterm_drains_and_exits_130_then_resume_finishes(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    sim = await simulator_factory(latency={"mean_ms": 20})
    job = write_job(
        tmp_path, sim.base_url, rows=600, limits={"max_concurrency": 4}, output={"part_rows": 20}
    )
    process = await start_run(job)
    await wait_for_parts(tmp_path / "out" / "results")
    process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 130, stderr.decode()
    partial = batchchat.read_results(tmp_path / "out")
    assert 0 < partial.height < 600
    assert sim.stats()["answered"] == partial.height  # in-flight answers were kept
    process = await start_run(job)
    await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0
    assert sorted(sim.stats()["answers"].values()) == [1] * 600


async def test_sigkill_at_random_moments_never_loses_or_duplicates(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    # ~200 rows/s: each round is killed long before it could finish all 1,000 rows
    sim = await simulator_factory(latency={"mean_ms": 20})
    job = write_job(
        tmp_path, sim.base_url, rows=1000, limits={"max_concurrency": 4}, output={"part_rows": 15}
    )
    results = tmp_path / "out" / "results"
    kept: dict[str, str] = {}  # row_id → response_id of every ok row ever seen on disk
    rng = random.Random(1234)
    for _ in range(4):
        parts = count_parts(results)
        process = await start_run(job)
        await wait_for_parts(results, at_least=parts + 1)  # this run is really sending
        await asyncio.sleep(rng.uniform(0.0, 0.4))  # ...then die at a random moment
        process.kill()
        await process.wait()
        if any(results.glob("part-*.parquet")):
            seen = pl.scan_parquet(results / "part-*.parquet").filter(pl.col("status") == "ok")
            for row_id, response_id in seen.select("row_id", "response_id").collect().iter_rows():
                assert kept.setdefault(row_id, response_id) == response_id  # never replaced
    process = await start_run(job)
    await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0
    raw = pl.scan_parquet(results / "part-*.parquet").collect()
    assert raw.height == 1000 and raw["row_id"].n_unique() == 1000  # exactly one row each
    assert (raw["status"] == "ok").all()
    final = dict(raw.select("row_id", "response_id").iter_rows())
    assert all(final[row_id] == response_id for row_id, response_id in kept.items())
    assert len(kept) > 0
    # an answer is on disk a moment after it arrives: a kill throws away the requests in
    # flight (4 here) and the few results of the last tens of ms, not whole parts
    thrown_away = sum(sim.stats()["answers"].values()) - 1000
    assert thrown_away <= 4 * (4 + 16), thrown_away


async def test_a_killed_runs_requests_count_in_the_next_report(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    sim = await simulator_factory(latency={"mean_ms": 20})
    job = write_job(tmp_path, sim.base_url, rows=2000, limits={"max_concurrency": 4})
    runs = tmp_path / "out" / "runs"
    process = await start_run(job)
    await wait_until(lambda: any(runs.glob("*.json")), "the run's counters saved")
    await asyncio.sleep(1.5)
    process.kill()
    await process.wait()
    handled = sim.stats()["requests"]
    (saved,) = [orjson.loads(path.read_bytes()) for path in runs.glob("*.json")]
    # the counters are saved every second: the killed run's last second may be missing
    assert 0 < saved["requests_sent"] <= handled
    assert saved["requests_sent"] >= handled / 3, (saved["requests_sent"], handled)
    process = await start_run(job)
    await asyncio.wait_for(process.communicate(), 60)
    report = orjson.loads((tmp_path / "out" / "report.json").read_bytes())
    final = sim.stats()["requests"]
    assert report["requests"]["sent"] >= saved["requests_sent"] + (final - handled)


async def test_a_second_run_on_the_same_output_exits_2_at_once(
    simulator: SimulatorServer, simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    slow = await simulator_factory(latency={"mean_ms": 50})
    job = write_job(tmp_path, slow.base_url, rows=300, limits={"max_concurrency": 2})
    first = await start_run(job)
    manifest = tmp_path / "out" / "manifest.json"
    await wait_until(manifest.exists, "the first run opening its output")
    second = await start_run(job)
    _, stderr = await asyncio.wait_for(second.communicate(), 30)
    assert second.returncode == 2
    assert b"being written by another batchchat run" in stderr
    assert f"pid {first.pid}".encode() in stderr
    first.kill()
    await first.wait()
    # the killed run's lock is stale: the next run takes it over and finishes
    third = await start_run(job, "--concurrency", "16")
    await asyncio.wait_for(third.communicate(), 60)
    assert third.returncode == 0
    report = orjson.loads((tmp_path / "out" / "report.json").read_bytes())
    assert report["rows"]["ok"] == 300


def test_an_output_given_on_the_command_line_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "jobs").mkdir()
    (tmp_path / "work").mkdir()
    job = write_job(tmp_path / "jobs")
    monkeypatch.chdir(tmp_path / "work")
    result = CliRunner().invoke(main, ["run", str(job), "-o", "here", "--limit", "3", "-q"])
    assert result.exit_code == 0, result.output
    assert batchchat.read_results(tmp_path / "work" / "here").height == 3
    assert not (tmp_path / "jobs" / "here").exists()


def test_log_json_ends_with_an_error_event_when_the_run_cannot_start(tmp_path: Path) -> None:
    job = write_job(tmp_path)
    job.write_text(job.read_text() + "limits: {rmp: 5}\n")
    result = CliRunner().invoke(main, ["run", str(job), "--log-json"])
    assert result.exit_code == 2
    last = orjson.loads(result.stdout.splitlines()[-1])
    assert last["event"] == "error" and last["exit_code"] == 2
    assert "limits.rmp" in last["message"]


def test_an_output_path_holding_someone_elses_files_exits_2_untouched(tmp_path: Path) -> None:
    job = write_job(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis.tex").write_text("mine")
    for flags in ([], ["--force"]):
        result = CliRunner().invoke(main, ["run", str(job), *flags])
        assert result.exit_code == 2, result.output
        assert "not a batchchat output directory" in result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["thesis.tex"]


def test_warnings_are_shown_and_sent_as_json_events(tmp_path: Path) -> None:
    job = write_job(
        tmp_path,
        request={"top_k": 40},
        endpoint={"headers": {"X-Api-Key": "literal-key-123"}},
    )
    result = CliRunner().invoke(main, ["validate", str(job)])
    assert result.exit_code == 0, result.output
    assert "request.top_k: not an OpenAI Chat Completions parameter" in result.output
    assert "endpoint.headers.X-Api-Key: a secret written in the spec itself" in result.output
    result = CliRunner().invoke(main, ["run", str(job), "--log-json", "--limit", "2"])
    assert result.exit_code == 0, result.output
    events = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert sum(e["event"] == "warning" for e in events) == 2
    assert "literal-key-123" not in (tmp_path / "out" / "job.yaml").read_text()


def test_a_budget_stop_says_the_budget_is_per_run(tmp_path: Path) -> None:
    job = write_job(tmp_path, rows=200, budget={"max_cost_usd": 0.00001})
    result = CliRunner().invoke(main, ["run", str(job)])
    assert result.exit_code == 3, result.output
    text = " ".join(result.output.split())
    assert "Stopped by the budget: this run spent $" in text
    assert "The budget counts per run: a re-run sends the" in text
    assert "requests left with a fresh budget" in text


@pytest.mark.parametrize(("chosen", "used"), [(None, "system"), ("jemalloc", "jemalloc")])
def test_a_run_allocates_arrow_memory_from_the_system_unless_told_otherwise(
    tmp_path: Path, chosen: str | None, used: str
) -> None:
    # mimalloc, pyarrow's default, holds ~30 MB more through a run (bench/RESULTS.md)
    job = write_job(tmp_path, rows=3)
    script = (
        "import sys\nfrom batchchat.cli import main\n"
        f"sys.argv = ['batchchat', 'run', {str(job)!r}, '--quiet']\n"
        "try:\n    main()\nexcept SystemExit as end:\n    assert end.code == 0, end.code\n"
        "import pyarrow\nprint(pyarrow.default_memory_pool().backend_name)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if chosen is not None:
        env["ARROW_DEFAULT_MEMORY_POOL"] = chosen
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [used]


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--workers", "2"], "workers: only for a run on Ray (engine 'ray')"),
        (["--ray-address", "auto"], "ray_address: only for a run on Ray (engine 'ray')"),
        (["--engine", "spark"], "Invalid value for '--engine'"),
        (["--engine", "ray", "--workers", "0"], "Invalid value for '--workers'"),
    ],
)
def test_ray_flags_out_of_place_are_usage_errors_and_nothing_is_written(
    tmp_path: Path, flags: list[str], said: str
) -> None:
    job = write_job(tmp_path)
    result = CliRunner().invoke(main, ["run", str(job), *flags])
    assert result.exit_code == 2
    assert said in result.output
    assert not (tmp_path / "out").exists()
