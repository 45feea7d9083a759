"""Run stats files: round trip, atomic replacement, tolerance of other versions and damage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from batchchat.errors import SinkError
from batchchat.models import ExecutionStats, TimelineBucket
from batchchat.results.layout import OutputLayout
from batchchat.results.runstats import load_stats, save_stats

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def full_stats(run_id: str = "20260301T120000Z-abc123") -> ExecutionStats:
    return ExecutionStats(
        run_id=run_id,
        started_at=T0,
        finished_at=T0 + timedelta(seconds=42),
        requests_sent=120,
        retries=20,
        rate_limited=7,
        status_counts={200: 100, 429: 7, 0: 13},
        results_ok=95,
        results_error=5,
        skipped=3,
        stop_reason="budget",
        timeline=[
            TimelineBucket(second=0, requests=10, rate_limited=2, ok=8, errors=0, tokens=900)
        ],
    )


def test_round_trip(tmp_path: Path) -> None:
    saved = full_stats()
    save_stats(tmp_path, saved)

    assert OutputLayout(tmp_path).run_stats(saved.run_id).is_file()
    assert load_stats(tmp_path) == [saved]


def test_saving_again_replaces_the_file_atomically(tmp_path: Path) -> None:
    stats = full_stats()
    save_stats(tmp_path, stats)
    stats.requests_sent = 500
    stats.finished_at = None
    save_stats(tmp_path, stats)

    [loaded] = load_stats(tmp_path)
    assert loaded.requests_sent == 500 and loaded.finished_at is None
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [f"{stats.run_id}.json"]


def test_runs_load_oldest_first_and_damaged_files_are_skipped(tmp_path: Path) -> None:
    late = full_stats("b-run")
    early = full_stats("z-run")
    early.started_at = T0 - timedelta(days=1)
    save_stats(tmp_path, late)
    save_stats(tmp_path, early)
    (tmp_path / "runs" / "broken.json").write_text("{not json")
    (tmp_path / "runs" / "foreign.json").write_text('{"hello": 1}')

    assert [s.run_id for s in load_stats(tmp_path)] == ["z-run", "b-run"]


def test_fields_of_other_versions_are_ignored(tmp_path: Path) -> None:
    data = {
        "run_id": "r",
        "started_at": T0.isoformat(),
        "requests_sent": 3,
        "a_field_from_the_future": [1, 2],
        "timeline": [{"second": 1, "requests": 3, "queue_depth": 9}],
    }
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "r.json").write_bytes(orjson.dumps(data))

    [loaded] = load_stats(tmp_path)
    assert loaded.requests_sent == 3 and loaded.finished_at is None
    assert loaded.timeline == [TimelineBucket(second=1, requests=3)]


def test_no_runs_directory_means_no_runs(tmp_path: Path) -> None:
    assert load_stats(tmp_path) == []


def test_an_unwritable_directory_is_a_sink_error(tmp_path: Path) -> None:
    (tmp_path / "runs").write_text("a file where the directory should be")

    with pytest.raises(SinkError, match="cannot write run stats"):
        save_stats(tmp_path, full_stats())
