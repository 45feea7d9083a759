"""The output directory: lock, manifest, resume checks, starting over, and its status.

Layout::

    out/job/
      .lock                  flock'ed by the run writing here; holds its pid, host, run id
      manifest.json          request fingerprint, batchchat version, times, run ids
      job.yaml               the resolved spec of the latest run (secrets excluded)
      results/part-NNNNN.parquet   the results, and the resume ledger
      runs/<run_id>.json     counters of each run (written by the runner)
      report.json, report.md the run report
      superseded/<time>/     what --force moved aside; never deleted by batchchat

The parts are the ledger: what is done is read from them (:mod:`batchchat.results.ledger`),
so there is no second file that could disagree with the results.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import yaml

from batchchat._version import __version__
from batchchat.errors import InputError, ResumeError, SinkError
from batchchat.models import ExecutionStats
from batchchat.results.ledger import (
    RESULTS_DIR,
    ResumeIndex,
    build_index,
    compact_parts,
    read_results,
    scan_results,
)
from batchchat.results.lock import LOCK, DirLock, LockInfo, live_holder
from batchchat.results.sink import fsync_dir, part_paths, remove_temporaries
from batchchat.spec import JobSpec

__all__ = [
    "LockInfo",
    "OutputDir",
    "ResumeIndex",
    "RunStatus",
    "describe_changes",
    "open_output",
    "read_results",
    "read_status",
    "scan_results",
]

MANIFEST = "manifest.json"
JOB_YAML = "job.yaml"
SUPERSEDED = "superseded"
_FORMAT = 1
#: runs remembered in the manifest (a daily job re-run for years must not grow it forever)
_MAX_RUNS = 100
_MAX_CHANGES_SHOWN = 20


def _now() -> str:
    return datetime.now(UTC).isoformat()


# -- the output directory -----------------------------------------------------------------------


class OutputDir:
    """An open, locked output directory (a context manager that releases the lock)."""

    def __init__(
        self,
        path: Path,
        lock: DirLock,
        run_id: str,
        *,
        superseded: Path | None = None,
        took_over: LockInfo | None = None,
    ) -> None:
        self.path = path
        self.results_dir = path / RESULTS_DIR
        self.run_id = run_id
        #: where --force moved the previous results (None: nothing was moved)
        self.superseded = superseded
        #: the holder of a stale lock this run took over (its process had died)
        self.took_over = took_over
        self._lock = lock

    def completed(self) -> ResumeIndex:
        """What earlier runs finished, read from the parts."""
        return build_index(self.results_dir)

    def compact(self) -> int:
        """Drop rows superseded by a later or ok row of the same key; returns rows dropped."""
        return compact_parts(self.results_dir)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> OutputDir:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def open_output(
    out_dir: Path | str,
    spec: JobSpec,
    *,
    force: bool = False,
    run_id: str | None = None,
    dry_run: bool = False,
) -> OutputDir:
    """Create or reopen an output directory for ``spec``: lock it, check it may be resumed.

    Raises LockedError when a live process holds it, ResumeError when it holds results of
    a spec whose requests differ, or the simulator's answers when this run is real (and the
    reverse) (``force=True`` moves them aside and starts over).
    """
    path = Path(out_dir)
    run_id = run_id or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SinkError(f"cannot create the output directory {path}: {exc.strerror}") from None
    lock = DirLock(path / LOCK)
    me = LockInfo(os.getpid(), socket.gethostname(), _now(), run_id)
    stale = lock.acquire(me)
    try:
        superseded = _prepare(path, spec, force, dry_run)
        _write_manifest(path, spec, me, reset=superseded is not None, dry_run=dry_run)
        _write_atomically(path / JOB_YAML, _job_yaml(spec))
    except BaseException:
        lock.release()
        raise
    return OutputDir(path, lock, run_id, superseded=superseded, took_over=stale)


def _prepare(path: Path, spec: JobSpec, force: bool, dry_run: bool) -> Path | None:
    """Check the directory may be resumed (or move it aside); returns where it was moved."""
    manifest = _read_manifest(path)
    results = path / RESULTS_DIR
    has_parts = bool(part_paths(results))
    superseded = None
    if force and (manifest is not None or has_parts):
        superseded = _move_aside(path)
    elif manifest is None and has_parts:
        raise ResumeError(
            f"{path} holds results but no {MANIFEST}, so which spec made them is unknown. "
            f"Re-run with --new-output DIR to write elsewhere, or --force to start over here "
            f"(the old results are moved to {path / SUPERSEDED}/, not deleted)."
        )
    elif manifest is not None and manifest.get("fingerprint") != spec.request_fingerprint():
        raise ResumeError(_changed_spec_message(path, manifest, spec))
    elif manifest is not None and has_parts and bool(manifest.get("dry_run")) != dry_run:
        raise ResumeError(_mixed_dry_run_message(path, dry_run))
    results.mkdir(exist_ok=True)
    remove_temporaries(results)  # half-written parts of a crashed run; never results
    return superseded


def _changed_spec_message(path: Path, manifest: dict[str, Any], spec: JobSpec) -> str:
    changes = describe_changes(manifest.get("request") or {}, _identity(spec))
    if not changes:
        changes = ["(the change is in a value not shown here, such as a redacted URL)"]
    shown = changes[:_MAX_CHANGES_SHOWN]
    if len(changes) > len(shown):
        shown.append(f"... and {len(changes) - len(shown)} more")
    return (
        f"{path} holds results of a different job spec; these settings change the requests:\n"
        + "\n".join(f"  {line}" for line in shown)
        + "\nResuming would mix answers to different requests. Re-run with --new-output DIR "
        f"to write elsewhere, or with --force to start over here (the old results are moved "
        f"to {path / SUPERSEDED}/, not deleted)."
    )


def _mixed_dry_run_message(path: Path, dry_run: bool) -> str:
    # a real run resuming a rehearsal would skip every row the simulator answered
    if dry_run:
        held, this = "real answers", "a --dry-run"
    else:
        held, this = "the simulator's answers (a --dry-run)", "a real run"
    return (
        f"{path} holds {held}; {this} must not resume them. Write elsewhere with "
        f"--new-output DIR, or start over here with --force (the old results are moved to "
        f"{path / SUPERSEDED}/, not deleted)."
    )


def _move_aside(path: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path / SUPERSEDED / stamp
    suffix = 1
    while target.exists():
        suffix += 1
        target = path / SUPERSEDED / f"{stamp}-{suffix}"
    target.mkdir(parents=True)
    entries = [e for e in path.iterdir() if e.name not in {LOCK, SUPERSEDED, MANIFEST}]
    # the manifest goes last: a crash halfway leaves a manifest with fewer (or no) parts,
    # which resumes as a fresh start, never parts without their manifest
    for entry in [*entries, path / MANIFEST]:
        if entry.exists():
            entry.rename(target / entry.name)
    fsync_dir(path)
    return target


# -- manifest and job.yaml ----------------------------------------------------------------------


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        data = orjson.loads((path / MANIFEST).read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ResumeError(
            f"{path / MANIFEST} is unreadable ({exc}); use --force to start over "
            "(the old results are moved aside) or --new-output DIR"
        ) from None
    if not isinstance(data, dict):
        raise ResumeError(f"{path / MANIFEST} is not a batchchat manifest")
    return data


def _write_manifest(
    path: Path, spec: JobSpec, me: LockInfo, *, reset: bool, dry_run: bool = False
) -> None:
    old = None if reset else _read_manifest(path)
    runs = [] if old is None else list(old.get("runs") or [])
    runs.append({"run_id": me.run_id, "started_at": me.started_at, "pid": me.pid, "host": me.host})
    manifest = {
        "format": _FORMAT,
        "job": spec.name,
        "fingerprint": spec.request_fingerprint(),
        "request": _identity(spec),
        "batchchat_version": __version__,
        "dry_run": dry_run,
        "created_at": me.started_at if old is None else old.get("created_at", me.started_at),
        "updated_at": me.started_at,
        "runs": runs[-_MAX_RUNS:],
    }
    _write_atomically(path / MANIFEST, orjson.dumps(manifest, option=orjson.OPT_INDENT_2))


def _identity(spec: JobSpec) -> dict[str, Any]:
    """The request-affecting settings as JSON data, with any password in the URL hidden."""
    identity = orjson.loads(orjson.dumps(spec.request_identity(), option=orjson.OPT_NON_STR_KEYS))
    identity["base_url"] = _redact_url(str(identity.get("base_url", "")))
    return dict(identity)


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _job_yaml(spec: JobSpec) -> bytes:
    text = yaml.safe_dump(spec.redacted(), sort_keys=False, allow_unicode=True)
    return text.encode()


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise SinkError(f"cannot write {path}: {exc.strerror or exc}") from None


# -- what changed -------------------------------------------------------------------------------


def describe_changes(old: Any, new: Any) -> list[str]:
    """One line per setting that differs: ``path: old → new`` (``(unset)`` when absent)."""
    before, after = _flatten(old), _flatten(new)
    lines = []
    for key in [*after, *(k for k in before if k not in after)]:
        a, b = before.get(key, _UNSET), after.get(key, _UNSET)
        if a != b:
            lines.append(f"{key}: {_show(a, b)} → {_show(b, a)}")
    return lines


_UNSET: Any = object()


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        items = [(f"{prefix}.{k}" if prefix else str(k), v) for k, v in value.items()]
    elif isinstance(value, list) and value:
        items = [(f"{prefix}[{i}]", v) for i, v in enumerate(value)]
    else:
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, child in items:
        flat.update(_flatten(child, key))
    return flat


def _show(value: Any, other: Any, width: int = 60) -> str:
    if value is _UNSET:
        return "(unset)"
    if isinstance(value, str) and isinstance(other, str) and len(value) > width:
        pairs = zip(value, other, strict=False)
        same = next((i for i, (a, b) in enumerate(pairs) if a != b), min(len(value), len(other)))
        start = max(0, same - 20)
        excerpt = value[start : start + width]
        return ("…" if start else "") + repr(excerpt) + ("…" if start + width < len(value) else "")
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


# -- status -------------------------------------------------------------------------------------

#: ``batchchat status`` exit codes by state (2 is "not an output directory")
STATUS_EXIT_CODES = {"done": 0, "failed": 1, "partial": 4, "running": 5}


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
    from batchchat.results.runstats import load_stats  # the runner's counters; imported when needed

    path = Path(out_dir)
    manifest = _read_manifest(path) if path.is_dir() else None
    if manifest is None:
        raise InputError(f"{path} is not a batchchat output directory (no {MANIFEST})")
    index = build_index(path / RESULTS_DIR)
    holder = live_holder(path)
    latest = (manifest.get("runs") or [{}])[-1]
    stats = _stats_of(latest, load_stats(path))
    run_id = stats.run_id if stats else latest.get("run_id")
    stop_reason = stats.stop_reason if stats and stats.finished_at else None
    if holder is not None:
        state = "running"
    elif stop_reason != "completed":
        state = "partial"  # interrupted, stopped by the budget, or killed before it finished
    else:
        state = "failed" if index.failed else "done"
    return RunStatus(
        path, state, index.ok, index.failed, run_id, stop_reason, manifest.get("updated_at"), holder
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
