"""The output directory: layout, lock, changed-spec refusal, --force, resume index, compaction."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import orjson
import polars as pl
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchchat.errors import LockedError, ResumeError, SpecError
from batchchat.models import ExecutionStats
from batchchat.results.layout import part_paths
from batchchat.results.ledger import ResumeIndex, read_results, scan_results
from batchchat.results.outdir import describe_changes, open_output
from batchchat.results.runstats import save_stats
from batchchat.results.status import read_status
from batchchat.spec import JobSpec
from tests._results import client_error, make_result, make_spec, server_error, write_parts

ROOT = Path(__file__).resolve().parents[2]


def done(
    index: ResumeIndex, *row_ids: str, sample: int = 0, retry_failed: bool = True
) -> list[bool]:
    """What a run would skip of these row ids."""
    ids = pl.Series(row_ids, dtype=pl.String)
    return index.done(ids, sample, retry_failed=retry_failed).to_list()


def spec_for(out: Path, **changes: object) -> JobSpec:
    return make_spec(output={"path": str(out)}, **changes)  # type: ignore[arg-type]


def test_open_creates_the_layout(tmp_path: Path) -> None:
    out = tmp_path / "out" / "job"
    spec = make_spec(endpoint={"simulator": {"api_key": "sim-secret-key"}})
    with open_output(out, spec, run_id="run-1") as opened:
        assert opened.results_dir == out / "results" and opened.results_dir.is_dir()
        manifest = orjson.loads((out / "manifest.json").read_bytes())
        assert manifest["fingerprint"] == spec.request_fingerprint()
        assert manifest["request"]["request"]["model"] == "gpt-test"
        assert manifest["batchchat_version"]
        assert [run["run_id"] for run in manifest["runs"]] == ["run-1"]
        job = yaml.safe_load((out / "job.yaml").read_text())
        assert job["request"]["model"] == "gpt-test"
        assert "sim-secret-key" not in (out / "job.yaml").read_text()
        lock = orjson.loads((out / ".lock").read_bytes())
        assert lock["pid"] == os.getpid() and lock["run_id"] == "run-1"
        assert lock["host"] == socket.gethostname()
    assert (out / ".lock").read_bytes() == b""  # released cleanly
    with open_output(out, spec, run_id="run-2"):
        manifest = orjson.loads((out / "manifest.json").read_bytes())
        assert [run["run_id"] for run in manifest["runs"]] == ["run-1", "run-2"]


def test_a_second_open_of_a_locked_directory_is_refused(tmp_path: Path) -> None:
    spec = make_spec()
    with open_output(tmp_path, spec, run_id="first"), pytest.raises(LockedError) as caught:
        open_output(tmp_path, spec)
    assert f"pid {os.getpid()}" in str(caught.value) and "run first" in str(caught.value)
    assert caught.value.exit_code == 2
    open_output(tmp_path, spec).release()  # free again once released


HOLDER = """
import sys
from pathlib import Path
from batchchat.results.outdir import open_output
from tests._results import make_spec

out = open_output(Path(sys.argv[1]), make_spec(), run_id="holder")
print("locked", flush=True)
sys.stdin.readline()  # hold the lock until told (or killed)
out.release()
"""


def start_holder(out: Path) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "locked"
    return child


@pytest.mark.slow
def test_a_live_lock_is_refused_and_a_killed_holders_lock_is_taken_over(tmp_path: Path) -> None:
    child = start_holder(tmp_path)
    try:
        with pytest.raises(LockedError, match=rf"pid {child.pid} on .*run holder"):
            open_output(tmp_path, make_spec())
        status = read_status(tmp_path)
        assert status.state == "running" and status.holder is not None
        assert status.holder.pid == child.pid
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        child.kill()
        child.wait()
        for stream in (child.stdin, child.stdout):
            assert stream is not None
            stream.close()
    assert orjson.loads((tmp_path / ".lock").read_bytes())["pid"] == child.pid  # stale content
    assert read_status(tmp_path).state == "partial"  # killed: not running any more
    with open_output(tmp_path, make_spec()) as opened:
        assert opened.took_over is not None and opened.took_over.pid == child.pid


# -- changed spec, --force ----------------------------------------------------------------------


def test_a_changed_spec_is_refused_with_what_changed(tmp_path: Path) -> None:
    old = make_spec(request={"temperature": 0.0})
    with open_output(tmp_path, old) as opened:
        write_parts(opened.results_dir, old, [make_result("1")])
    new = make_spec(
        request={
            "model": "gpt-other",
            "messages": [{"role": "user", "content": "Label this: {{ text }}"}],
            "seed": 3,
        }
    )
    with pytest.raises(ResumeError) as caught:
        open_output(tmp_path, new)
    message = str(caught.value)
    assert "request.model: 'gpt-test' → 'gpt-other'" in message
    assert "request.messages[0].content: '{{ text }}' → 'Label this: {{ text }}'" in message
    assert "request.temperature: 0.0 → (unset)" in message
    assert "request.seed: (unset) → 3" in message
    assert "--new-output DIR" in message and "--force" in message
    assert caught.value.exit_code == 2
    # refused without touching anything, and the lock is free again
    assert len(part_paths(tmp_path / "results")) == 1
    assert (tmp_path / ".lock").read_bytes() == b""


def test_output_settings_do_not_change_the_fingerprint(tmp_path: Path) -> None:
    with open_output(tmp_path, make_spec(output={"part_rows": 10})):
        pass
    with open_output(tmp_path, make_spec(output={"part_rows": 99}, limits={"rpm": 5})):
        pass  # resumable: only how it is sent changed, not what


def test_force_moves_the_old_results_aside(tmp_path: Path) -> None:
    old = make_spec()
    with open_output(tmp_path, old) as opened:
        write_parts(opened.results_dir, old, [make_result("1"), make_result("2")])
    (tmp_path / "report.md").write_text("old report")
    new = make_spec(request={"model": "gpt-other"})
    with open_output(tmp_path, new, force=True) as opened:
        assert opened.superseded is not None
        assert opened.superseded.parent == tmp_path / "superseded"
        assert opened.completed().ok == 0 and part_paths(opened.results_dir) == []
        manifest = orjson.loads((tmp_path / "manifest.json").read_bytes())
        assert manifest["fingerprint"] == new.request_fingerprint()
        assert len(manifest["runs"]) == 1
    aside = opened.superseded
    assert read_results(aside).height == 2  # kept, readable where it was moved
    assert orjson.loads((aside / "manifest.json").read_bytes())["fingerprint"] == (
        old.request_fingerprint()
    )
    assert (aside / "report.md").read_text() == "old report"
    assert not (tmp_path / "report.md").exists()
    with open_output(tmp_path, new, force=True) as again:  # a second --force: a second place
        assert again.superseded is not None and again.superseded != aside


def test_results_without_a_manifest_are_not_resumed_blindly(tmp_path: Path) -> None:
    spec = make_spec()
    write_parts(tmp_path / "results", spec, [make_result("1")])
    with pytest.raises(ResumeError, match=r"no manifest\.json"):
        open_output(tmp_path, spec)
    with open_output(tmp_path, spec, force=True) as opened:
        assert opened.superseded is not None


def test_half_written_parts_of_a_crash_are_removed_on_open(tmp_path: Path) -> None:
    spec = make_spec()
    with open_output(tmp_path, spec) as opened:
        write_parts(opened.results_dir, spec, [make_result("1")])
        (opened.results_dir / ".tmp-part-00001.parquet").write_bytes(b"PAR1 half")
    with open_output(tmp_path, spec) as opened:
        assert sorted(os.listdir(opened.results_dir)) == ["part-00000.parquet"]


def test_describe_changes() -> None:
    long_old = "Classify the sentiment of the following review. " * 3 + "Answer: A"
    long_new = long_old[:-1] + "B"
    lines = describe_changes(
        {"a": 1, "b": [1, 2], "c": {"d": "x"}, "t": long_old},
        {"a": 1, "b": [1], "c": {"d": "y", "e": None}, "t": long_new},
    )
    assert "c.d: 'x' → 'y'" in lines
    assert "c.e: (unset) → None" in lines
    assert "b[1]: 2 → (unset)" in lines
    assert any(
        line.startswith("t: …") and "Answer: A" in line and "Answer: B" in line for line in lines
    )
    assert len(lines) == 4


# -- resume index and deduplication -------------------------------------------------------------


def index_of(tmp_path: Path, rows: list[tuple[str, int, bool]]) -> ResumeIndex:
    spec = make_spec()
    results = [
        make_result(row_id, sample) if ok else make_result(row_id, sample, error=server_error())
        for row_id, sample, ok in rows
    ]
    with open_output(tmp_path, spec) as opened:
        write_parts(opened.results_dir, spec, results, part_rows=2)
        return opened.completed()


def test_resume_index_knows_ok_and_failed_keys(tmp_path: Path) -> None:
    index = index_of(
        tmp_path,
        [("a", 0, True), ("b", 0, False), ("b", 0, True), ("c", 0, False), ("c", 1, False)],
    )
    assert (index.ok, index.failed) == (2, 2)
    assert done(index, "a", "b") == [True, True]
    assert done(index, "c", "z") == [False, False] and done(index, "a", sample=1) == [False]
    ids = pl.Series(["a", "b", "c", "d"])
    assert index.done(ids, 0).to_list() == [True, True, False, False]
    assert index.done(ids, 0, retry_failed=False).to_list() == [True, True, True, False]
    assert index.done(ids, 1, retry_failed=False).to_list() == [False, False, True, False]
    assert index.done(ids, 2, retry_failed=False).to_list() == [False] * 4  # no such sample
    # c failed; b failed, then was ok
    assert done(index, "c", "b", retry_failed=False) == [True, True]
    assert done(index, "c", "b") == [False, True]


def test_integer_row_ids_are_matched_exactly(tmp_path: Path) -> None:
    # ids are compared as text: "07" or "+7" must not pass for "7"
    index = index_of(tmp_path, [(str(i), 0, True) for i in range(0, 50, 2)] + [("7", 0, False)])
    assert done(index, "0", "48") == [True, True]
    assert done(index, "1", "50") == [False, False]
    assert done(index, "04", "+4", "٤") == [False, False, False]
    keep_failed = index.done(pl.Series(["7", "07", "8"]), 0, retry_failed=False)
    assert done(index, "7") == [False] and keep_failed.to_list() == [True, False, True]


def test_an_empty_directory_has_nothing_done(tmp_path: Path) -> None:
    with open_output(tmp_path, make_spec()) as opened:
        index = opened.completed()
        assert (index.ok, index.failed) == (0, 0) and done(index, "0") == [False]
        assert opened.compact() == 0
    assert read_results(tmp_path).height == 0


#: a write: (row id, sample, ok?)
writes = st.lists(
    st.tuples(st.sampled_from(["0", "1", "2", "10", "x", "y-1"]), st.integers(0, 1), st.booleans()),
    min_size=1,
    max_size=30,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(writes, st.integers(1, 7))
def test_any_history_dedups_to_one_row_per_key_ok_preferred(
    history: list[tuple[str, int, bool]], part_rows: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        spec = make_spec()
        results = [
            # attempts numbers the writes, so "the latest" can be checked
            make_result(r, s, attempts=i)
            if ok
            else make_result(r, s, attempts=i, error=client_error())
            for i, (r, s, ok) in enumerate(history)
        ]
        with open_output(out, spec) as opened:
            write_parts(opened.results_dir, spec, results, part_rows=part_rows)
            index = opened.completed()
            frame = read_results(out)
            assert frame.height == frame.select("row_id", "sample").unique().height
            for (row_id, sample), group in _by_key(history).items():
                row = frame.filter((pl.col("row_id") == row_id) & (pl.col("sample") == sample))
                assert row.height == 1
                oks = [i for i, ok in group if ok]
                expected = oks[-1] if oks else group[-1][0]
                assert row.item(0, "attempts") == expected
                assert row.item(0, "status") == ("ok" if oks else "error")
                assert done(index, row_id, sample=sample) == [bool(oks)]
            assert index.ok + index.failed == frame.height
            dropped = opened.compact()
            assert dropped == len(history) - frame.height
            on_disk = pl.scan_parquet(opened.results_dir / "*.parquet").collect()
            assert sorted(on_disk.rows()) == sorted(frame.rows())  # parts now equal the result
            assert opened.compact() == 0


def _by_key(history: list[tuple[str, int, bool]]) -> dict[tuple[str, int], list[tuple[int, bool]]]:
    keys: dict[tuple[str, int], list[tuple[int, bool]]] = {}
    for i, (row_id, sample, ok) in enumerate(history):
        keys.setdefault((row_id, sample), []).append((i, ok))
    return keys


def test_compaction_removes_parts_left_empty(tmp_path: Path) -> None:
    spec = make_spec()
    failed = [make_result(str(i), error=server_error()) for i in range(3)]
    retried = [make_result(str(i)) for i in range(3)]
    with open_output(tmp_path, spec) as opened:
        write_parts(opened.results_dir, spec, failed, part_rows=3)
        write_parts(opened.results_dir, spec, retried, part_rows=2)
        assert len(part_paths(opened.results_dir)) == 3
        assert opened.compact() == 3
        assert [p.name for p in part_paths(opened.results_dir)] == [
            "part-00001.parquet",
            "part-00002.parquet",
        ]
        assert scan_results(tmp_path).collect()["status"].to_list() == ["ok"] * 3


# -- status -------------------------------------------------------------------------------------


def finish_run(out: Path, run_id: str, stop_reason: str | None) -> None:
    stats = ExecutionStats(run_id=run_id, started_at=datetime.now(UTC))
    if stop_reason is not None:
        stats.stop_reason = stop_reason
        stats.finished_at = datetime.now(UTC)
    save_stats(out, stats)


@pytest.mark.parametrize(
    ("rows", "stop_reason", "state", "code"),
    [
        ([True, True], "completed", "done", 0),
        ([True, False], "completed", "failed", 1),
        ([True, False], "interrupted", "partial", 4),
        ([True], "budget", "partial", 4),
        ([True], None, "partial", 4),  # killed: its counters never got a finish time
    ],
)
def test_status_states(
    tmp_path: Path, rows: list[bool], stop_reason: str | None, state: str, code: int
) -> None:
    spec = make_spec()
    results = [
        make_result(str(i)) if ok else make_result(str(i), error=server_error())
        for i, ok in enumerate(rows)
    ]
    with open_output(tmp_path, spec, run_id="r1") as opened:
        write_parts(opened.results_dir, spec, results)
        finish_run(tmp_path, "r1", stop_reason)
    status = read_status(tmp_path)
    assert (status.state, status.exit_code) == (state, code)
    assert (status.ok, status.failed) == (rows.count(True), rows.count(False))
    assert status.run_id == "r1" and status.holder is None


def test_status_of_a_run_whose_id_the_runner_chose(tmp_path: Path) -> None:
    with open_output(tmp_path, make_spec()):  # the directory got its own run id
        finish_run(tmp_path, "runner-id", "completed")
    status = read_status(tmp_path)
    assert status.state == "done" and status.run_id == "runner-id"


def test_another_id_column_is_another_set_of_rows(tmp_path: Path) -> None:
    with open_output(tmp_path, make_spec(input={"path": "x.jsonl", "id_column": "a"})):
        pass
    with pytest.raises(ResumeError, match=r"id_column: 'a' → 'b'"):
        open_output(tmp_path, make_spec(input={"path": "x.jsonl", "id_column": "b"}))


def test_spaces_inside_a_template_tag_still_resume(tmp_path: Path) -> None:
    def spec(content: str) -> JobSpec:
        return make_spec(request={"messages": [{"role": "user", "content": content}]})

    with open_output(tmp_path, spec("Label: {{ text }}")):
        pass
    with open_output(tmp_path, spec("Label: {{text}}")):
        pass
    with pytest.raises(ResumeError):
        open_output(tmp_path, spec("Label:  {{text}}"))


def test_a_directory_from_the_previous_manifest_format_resumes(tmp_path: Path) -> None:
    spec = make_spec()
    with open_output(tmp_path, spec) as opened:
        write_parts(opened.results_dir, spec, [make_result("1")])
    manifest = orjson.loads((tmp_path / "manifest.json").read_bytes())
    manifest.update(format=1, fingerprint=spec.legacy_fingerprint())
    (tmp_path / "manifest.json").write_bytes(orjson.dumps(manifest))
    with open_output(tmp_path, spec) as opened:
        assert opened.completed().ok == 1
    manifest = orjson.loads((tmp_path / "manifest.json").read_bytes())
    assert manifest["format"] == 2 and manifest["fingerprint"] == spec.request_fingerprint()


def test_a_file_or_a_foreign_directory_is_no_output_directory(tmp_path: Path) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    with pytest.raises(SpecError, match=r"is a file, not a directory") as caught:
        open_output(a_file, make_spec())
    assert caught.value.exit_code == 2
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("mine")
    with pytest.raises(SpecError, match=r"not empty and not a batchchat output directory .*thesis"):
        open_output(home, make_spec(), force=True)
    assert sorted(os.listdir(home)) == ["thesis.tex"]
    assert a_file.read_text() == "mine"


def test_force_moves_only_what_batchchat_wrote(tmp_path: Path) -> None:
    spec = make_spec()
    with open_output(tmp_path, spec) as opened:
        write_parts(opened.results_dir, spec, [make_result("1")])
    (tmp_path / "analysis.ipynb").write_text("the user's")
    with open_output(tmp_path, make_spec(request={"model": "gpt-other"}), force=True) as opened:
        assert opened.superseded is not None
        moved = sorted(os.listdir(opened.superseded))
    assert "analysis.ipynb" not in moved and "results" in moved
    assert (tmp_path / "analysis.ipynb").read_text() == "the user's"
