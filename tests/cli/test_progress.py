"""Progress snapshots and the three display modes (plain lines, JSON events, quiet)."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import orjson
import pytest

from batchchat.cli.progress import ProgressDisplay, Snapshot, format_duration
from batchchat.models import ExecutionStats, StopReason


def stats(
    ok: int,
    error: int = 0,
    sent: int | None = None,
    skipped: int = 0,
    *,
    tokens: tuple[int, int] = (0, 0),
    cost_usd: float = 0.0,
    planned: int | None = None,
) -> ExecutionStats:
    s = ExecutionStats(run_id="r1", started_at=datetime.now(UTC))
    s.results_ok, s.results_error, s.skipped = ok, error, skipped
    s.requests_sent = ok + error if sent is None else sent
    s.prompt_tokens, s.completion_tokens = tokens
    s.cost_usd = cost_usd
    s.planned = planned
    return s


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59.4, "59s"), (60, "1m00s"), (3599, "59m59s"), (3600, "1h00m"), (7384, "2h03m")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_snapshot_rates_and_eta() -> None:
    done = stats(90, 10, sent=120, tokens=(800, 200), cost_usd=0.5, planned=300)
    snap = Snapshot.of(done, elapsed=10.0)
    assert snap.done == 100
    assert snap.requests_per_s == pytest.approx(12.0)
    assert snap.tokens_per_s == pytest.approx(100.0)
    assert snap.eta_s == pytest.approx(20.0)  # 200 left at 10 rows/s
    assert "100/300 done (33%) (10 failed)" in snap.line()
    assert "ETA 20s" in snap.line()


def test_a_run_that_is_stopping_shows_what_is_in_flight_not_an_eta() -> None:
    stopping = stats(90, 10, planned=300)
    stopping.stop_reason, stopping.in_flight = StopReason.INTERRUPTED, 12
    line = Snapshot.of(stopping, elapsed=10.0).line()
    assert "ETA" not in line
    assert "stopping (interrupted): 12 in flight" in line


def test_skipped_rows_are_not_remaining_work() -> None:
    snap = Snapshot.of(stats(10, skipped=80, planned=100), elapsed=1.0)
    assert snap.eta_s == pytest.approx(1.0)


def test_unknown_total_has_no_eta() -> None:
    assert Snapshot.of(stats(5), elapsed=1.0).eta_s is None


def test_plain_mode_prints_at_most_every_interval() -> None:
    now = [0.0]
    out = io.StringIO()
    display = ProgressDisplay("plain", every_s=10, stream=out, clock=lambda: now[0])
    with display:
        for t in (1.0, 5.0, 10.5, 12.0, 21.0):
            now[0] = t
            display.update(stats(int(t)))
        display.update(stats(30), final=True)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # at 10.5, 21.0, and the final line
    assert lines[-1].startswith("batchchat: 30 done")


def test_json_mode_writes_one_event_per_line_with_run_fields() -> None:
    out = io.StringIO()
    display = ProgressDisplay(
        "json",
        stream=out,
        fields={"job": "j", "run_id": "r1"},
        clock=lambda: 1.0,
    )
    with display:
        display.event("started", output="out/j")
        display.update(stats(4))
        display.update(stats(10, cost_usd=0.25), final=True)
    events = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["started", "progress", "finished"]
    assert all(e["job"] == "j" and e["run_id"] == "r1" for e in events)
    assert events[-1]["done"] == 10
    assert events[-1]["cost_usd"] == 0.25


def test_quiet_mode_writes_nothing() -> None:
    out = io.StringIO()
    with ProgressDisplay("quiet", stream=out) as display:
        display.event("started")
        display.update(stats(3), final=True)
    assert out.getvalue() == ""
