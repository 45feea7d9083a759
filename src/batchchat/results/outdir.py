"""Opening an output directory for a run: lock, manifest, resume checks, starting over.

Its paths are :mod:`batchchat.results.layout`'s. The parts are the ledger: what is
done is read from them (:mod:`batchchat.results.ledger`), so there is no second file
that could disagree with the results.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
import yaml

from batchchat._version import __version__
from batchchat.errors import ResumeError, SinkError, SpecError
from batchchat.models import new_run_id
from batchchat.results.inputs import InputRecord, input_changes, save_input_record
from batchchat.results.layout import OutputLayout, fsync_dir, remove_temporaries, write_atomically
from batchchat.results.ledger import ResumeIndex, build_index, compact_parts
from batchchat.results.lock import DirLock, LockInfo
from batchchat.spec import JobSpec
from batchchat.spec.endpoint import without_password
from batchchat.spec.pool import mapping_changes, model_mappings

#: 2: the fingerprint counts input.id_column, and templates by their tokens
_FORMAT = 2
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
        self.layout = OutputLayout(path)
        self.results_dir = self.layout.results
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
    upstream: InputRecord | None = None,
) -> OutputDir:
    """Create or reopen an output directory for ``spec``: lock it, check it may be resumed.

    Raises LockedError when a live process holds it, ResumeError when it holds results of
    a spec whose requests differ, of other upstream results (``upstream``: what a chained
    input was read from, see :mod:`batchchat.results.upstream`), or the simulator's
    answers when this run is real (and the reverse) (``force=True`` moves them aside and
    starts over).
    """
    path = Path(out_dir)
    layout = OutputLayout(path)
    problem = layout.problem()
    if problem is not None:
        raise SpecError(problem)
    run_id = run_id or new_run_id()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SinkError(f"cannot create the output directory {path}: {exc.strerror}") from None
    lock = DirLock(layout.lock)
    me = LockInfo(os.getpid(), socket.gethostname(), _now(), run_id)
    stale = lock.acquire(me)
    try:
        superseded = _prepare(layout, spec, force, dry_run, upstream)
        if upstream is not None:
            save_input_record(layout, upstream)
        _write_manifest(
            layout,
            spec,
            me,
            reset=superseded is not None,
            dry_run=dry_run,
            upstream=None if upstream is None else upstream.summary(),
        )
        write_atomically(layout.job_yaml, _job_yaml(spec))
    except BaseException:
        lock.release()
        raise
    return OutputDir(path, lock, run_id, superseded=superseded, took_over=stale)


def _prepare(
    layout: OutputLayout,
    spec: JobSpec,
    force: bool,
    dry_run: bool,
    upstream: InputRecord | None = None,
) -> Path | None:
    """Check the directory may be resumed (or move it aside); returns where it was moved."""
    manifest = read_manifest(layout.root)
    has_parts = bool(layout.parts())
    superseded = None
    if force and (manifest is not None or has_parts):
        superseded = _move_aside(layout)
    elif manifest is None and has_parts:
        raise ResumeError(
            f"{layout.root} holds results but no {layout.manifest.name}, so which spec made "
            f"them is unknown. Re-run with --new-output DIR to write elsewhere, or --force to "
            f"start over here (the old results are moved to {layout.superseded}/, not deleted)."
        )
    elif manifest is not None and not _same_requests(manifest, spec):
        raise ResumeError(_changed_spec_message(layout, manifest, spec))
    elif manifest is not None and (remapped := _remapped_models(manifest, spec)):
        raise ResumeError(_changes_message(layout, remapped))
    elif (
        manifest is not None
        and has_parts
        and (changed := input_changes(layout, manifest.get("upstream"), upstream))
    ):
        raise ResumeError(_changed_upstream_message(layout, changed))
    elif manifest is not None and has_parts and bool(manifest.get("dry_run")) != dry_run:
        raise ResumeError(_mixed_dry_run_message(layout, dry_run))
    layout.results.mkdir(exist_ok=True)
    remove_temporaries(layout.results)  # half-written parts of a crashed run; never results
    remove_temporaries(layout.root)
    return superseded


def _same_requests(manifest: dict[str, Any], spec: JobSpec) -> bool:
    """Whether the directory's results answer this spec's requests, row for row."""
    if manifest.get("format", 1) < _FORMAT:  # written before id_column counted
        return bool(manifest.get("fingerprint") == spec.legacy_fingerprint())
    return bool(manifest.get("fingerprint") == spec.request_fingerprint())


def _remapped_models(manifest: dict[str, Any], spec: JobSpec) -> list[str]:
    """The models a pool member that was there before now maps to another name: that member
    would be sent other requests (members added or removed change nothing)."""
    return mapping_changes(manifest.get("endpoint_models") or {}, model_mappings(spec.endpoints))


def _changed_spec_message(layout: OutputLayout, manifest: dict[str, Any], spec: JobSpec) -> str:
    changes = describe_changes(manifest.get("request") or {}, _identity(spec))
    if not changes:
        changes = ["(the change is in a value not shown here, such as a redacted URL)"]
    return _changes_message(layout, changes)


def _changes_message(layout: OutputLayout, changes: list[str]) -> str:
    shown = changes[:_MAX_CHANGES_SHOWN]
    if len(changes) > len(shown):
        shown.append(f"... and {len(changes) - len(shown)} more")
    return (
        f"{layout.root} holds results of a different job spec; these settings change the "
        "requests:\n"
        + "\n".join(f"  {line}" for line in shown)
        + "\nResuming would mix answers to different requests. Re-run with --new-output DIR "
        f"to write elsewhere, or with --force to start over here (the old results are moved "
        f"to {layout.superseded}/, not deleted)."
    )


def _changed_upstream_message(layout: OutputLayout, changes: list[str]) -> str:
    return (
        f"{layout.root} holds results made from other input rows:\n"
        + "\n".join(f"  {line}" for line in changes)
        + "\nResuming would mix answers to different upstream results. Re-run with "
        f"--new-output DIR to write elsewhere, or with --force to start over here (the old "
        f"results are moved to {layout.superseded}/, not deleted)."
    )


def _mixed_dry_run_message(layout: OutputLayout, dry_run: bool) -> str:
    # a real run resuming a rehearsal would skip every row the simulator answered
    if dry_run:
        held, this = "real answers", "a --dry-run"
    else:
        held, this = "the simulator's answers (a --dry-run)", "a real run"
    return (
        f"{layout.root} holds {held}; {this} must not resume them. Write elsewhere with "
        f"--new-output DIR, or start over here with --force (the old results are moved to "
        f"{layout.superseded}/, not deleted)."
    )


def _move_aside(layout: OutputLayout) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = layout.superseded / stamp
    suffix = 1
    while target.exists():
        suffix += 1
        target = layout.superseded / f"{stamp}-{suffix}"
    target.mkdir(parents=True)
    # only what batchchat wrote, the manifest last: a crash halfway leaves a manifest with
    # fewer (or no) parts, which resumes as a fresh start, never parts without their manifest
    for entry in layout.written():
        if entry.exists():
            entry.rename(target / entry.name)
    fsync_dir(layout.root)
    return target


# -- manifest and job.yaml ----------------------------------------------------------------------


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    """The manifest of an output directory; None when there is none, ResumeError when it
    cannot be read."""
    path = OutputLayout(out_dir).manifest
    try:
        data = orjson.loads(path.read_bytes())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ResumeError(
            f"{path} is unreadable ({exc}); use --force to start over "
            "(the old results are moved aside) or --new-output DIR"
        ) from None
    if not isinstance(data, dict):
        raise ResumeError(f"{path} is not a batchchat manifest")
    return data


def _write_manifest(
    layout: OutputLayout,
    spec: JobSpec,
    me: LockInfo,
    *,
    reset: bool,
    dry_run: bool = False,
    upstream: dict[str, Any] | None = None,
) -> None:
    old = None if reset else read_manifest(layout.root)
    runs = [] if old is None else list(old.get("runs") or [])
    runs.append({"run_id": me.run_id, "started_at": me.started_at, "pid": me.pid, "host": me.host})
    manifest = {
        "format": _FORMAT,
        "job": spec.name,
        "fingerprint": spec.request_fingerprint(),
        "request": _identity(spec),
        **_endpoint_models(old, spec),
        "batchchat_version": __version__,
        "dry_run": dry_run,
        "created_at": me.started_at if old is None else old.get("created_at", me.started_at),
        "updated_at": me.started_at,
        "runs": runs[-_MAX_RUNS:],
    }
    if upstream is not None:
        manifest["upstream"] = upstream
    write_atomically(layout.manifest, orjson.dumps(manifest, option=orjson.OPT_INDENT_2))


def _endpoint_models(old: dict[str, Any] | None, spec: JobSpec) -> dict[str, Any]:
    """Every pool member's model mapping so far, by name: a member left out for a run and
    put back later must still map as it did when it answered."""
    before = {} if old is None else dict(old.get("endpoint_models") or {})
    if not spec.endpoints and not before:
        return {}
    return {"endpoint_models": {**before, **model_mappings(spec.endpoints)}}


def _identity(spec: JobSpec) -> dict[str, Any]:
    """The request-affecting settings as JSON data, with any password in the URL hidden."""
    identity = orjson.loads(orjson.dumps(spec.request_identity(), option=orjson.OPT_NON_STR_KEYS))
    if "base_url" in identity:  # a pool has none: its members may change between runs
        identity["base_url"] = without_password(str(identity["base_url"]))
    return dict(identity)


def _job_yaml(spec: JobSpec) -> bytes:
    text = yaml.safe_dump(spec.redacted(), sort_keys=False, allow_unicode=True)
    return text.encode()


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
