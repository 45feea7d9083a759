"""Where an output directory stands: done, partial, running or failed, with counts."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from batchchat.errors import InputError
from batchchat.models import ExecutionStats, ExitCode, StopReason
from batchchat.results.layout import OutputLayout
from batchchat.results.ledger import build_index
from batchchat.results.lock import LockInfo, live_holder
from batchchat.results.outdir import read_manifest
from batchchat.results.runstats import load_stats

#: ``batchchat status`` exit codes by state (2 is "not an output directory")
STATUS_EXIT_CODES = {
    "done": ExitCode.OK,
    "failed": ExitCode.FAILED,
    "partial": ExitCode.PARTIAL,
    "running": ExitCode.RUNNING,
    # batch mode: batches are at the Batch API and no run is waiting for them
    "pending": ExitCode.PENDING,
}


@dataclass(frozen=True, slots=True)
class RunStatus:
    """Where an output directory stands: done, partial, running or failed, with counts."""

    path: Path
    state: str
    #: (row_id, sample) keys with an ok row
    ok: int
    #: keys whose every row is an error
    failed: int
    #: the latest run, and why it stopped (None: no run finished or saved its counters)
    run_id: str | None
    stop_reason: str | None
    updated_at: str | None
    #: the process writing the directory now (state "running")
    holder: LockInfo | None
    #: what stopped the latest run early, when every other request would have failed too
    fatal_error: str | None = None

    @property
    def exit_code(self) -> int:
        return STATUS_EXIT_CODES[self.state]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        data["exit_code"] = self.exit_code
        return data


def read_status(out_dir: Path | str) -> RunStatus:
    """The status of an output directory (InputError when it is not one)."""
    path = Path(out_dir)
    layout = OutputLayout(path)
    manifest = read_manifest(path) if path.is_dir() else None
    if manifest is None:
        raise InputError(f"{path} is not a batchchat output directory (no {layout.manifest.name})")
    index = build_index(layout.results)
    holder = live_holder(path)
    latest = (manifest.get("runs") or [{}])[-1]
    stats = _stats_of(latest, load_stats(path))
    run_id = stats.run_id if stats else latest.get("run_id")
    stop_reason = stats.stop_reason if stats and stats.finished_at else None
    if holder is not None:
        state = "running"
    elif stop_reason != StopReason.COMPLETED:
        state = "partial"  # interrupted, stopped by the budget, or killed before it finished
    else:
        state = "failed" if index.failed else "done"
    return RunStatus(
        path,
        state,
        index.ok,
        index.failed,
        run_id,
        stop_reason,
        manifest.get("updated_at"),
        holder,
        stats.fatal_error if stats else None,
    )


def _stats_of(run: dict[str, Any], saved: list[ExecutionStats]) -> ExecutionStats | None:
    """The saved counters of the manifest's latest run: by run id, else the newest saved
    since that run opened the directory."""
    for stats in saved:
        if stats.run_id == run.get("run_id"):
            return stats
    opened = run.get("started_at")
    if not saved or not opened:
        return None
    newest = saved[-1]
    return newest if newest.started_at >= datetime.fromisoformat(opened) else None
