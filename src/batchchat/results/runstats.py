"""The counters of each run, kept next to its results as ``runs/<run_id>.json``.

The runner saves them every few seconds and at the end, so a report of an
interrupted run (even one killed with SIGKILL) still knows what was sent.
Files are replaced atomically: a reader sees the old file or the new one, never half.
Reading is lenient about fields: a file written by an older or newer batchchat
loads with the fields both know.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from batchchat.models import EndpointStats, ExecutionStats, StopReason, TimelineBucket
from batchchat.planning.reader import InputIssue
from batchchat.results.layout import OutputLayout, write_atomically


def save_stats(out_dir: Path, stats: ExecutionStats) -> None:
    """Write the stats of a run atomically (temporary file + rename)."""
    path = OutputLayout(out_dir).run_stats(stats.run_id)
    data = orjson.dumps(stats_to_dict(stats), option=orjson.OPT_INDENT_2)
    write_atomically(path, data, what="run stats")


def load_stats(out_dir: Path) -> list[ExecutionStats]:
    """The stats of every run in an output directory, oldest first (unreadable files skipped)."""
    runs = OutputLayout(out_dir).runs
    if not runs.is_dir():
        return []
    loaded = []
    for path in sorted(runs.glob("*.json")):
        try:
            loaded.append(stats_from_dict(orjson.loads(path.read_bytes())))
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue  # a foreign or damaged file must not hide the other runs
    return sorted(loaded, key=lambda stats: stats.started_at)


def stats_to_dict(stats: ExecutionStats) -> dict[str, Any]:
    """Plain JSON-ready data: datetimes as ISO 8601, status codes as string keys."""
    data: dict[str, Any] = {}
    for field in dataclasses.fields(stats):
        value = getattr(stats, field.name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif field.name == "status_counts":
            value = {str(code): count for code, count in value.items()}
        elif field.name == "timeline":
            value = [dataclasses.asdict(bucket) for bucket in value]
        elif field.name == "endpoints":
            value = {name: _endpoint_to_dict(counts) for name, counts in value.items()}
        data[field.name] = value
    return data


def stats_from_dict(data: dict[str, Any]) -> ExecutionStats:
    """The inverse of :func:`stats_to_dict`, ignoring fields this version does not know."""
    known = {field.name for field in dataclasses.fields(ExecutionStats)}
    values = {key: value for key, value in data.items() if key in known}
    values["started_at"] = datetime.fromisoformat(data["started_at"])
    if "stop_reason" in values:
        values["stop_reason"] = StopReason(values["stop_reason"])
    if values.get("finished_at"):
        values["finished_at"] = datetime.fromisoformat(values["finished_at"])
    values["status_counts"] = {
        int(code): int(count) for code, count in (data.get("status_counts") or {}).items()
    }
    bucket_fields = {field.name for field in dataclasses.fields(TimelineBucket)}
    values["timeline"] = [
        TimelineBucket(**{k: v for k, v in bucket.items() if k in bucket_fields})
        for bucket in data.get("timeline") or []
    ]
    values["endpoints"] = {
        str(name): _endpoint_from_dict(counts)
        for name, counts in (data.get("endpoints") or {}).items()
    }
    return ExecutionStats(**values)


def _endpoint_to_dict(counts: EndpointStats) -> dict[str, Any]:
    data = dataclasses.asdict(counts)
    data["status_counts"] = {str(code): n for code, n in counts.status_counts.items()}
    return data


def _endpoint_from_dict(data: dict[str, Any]) -> EndpointStats:
    known = {field.name for field in dataclasses.fields(EndpointStats)}
    values = {key: value for key, value in data.items() if key in known}
    values["status_counts"] = {
        int(code): int(n) for code, n in (data.get("status_counts") or {}).items()
    }
    return EndpointStats(**values)


def save_input_issues(out_dir: Path, run_id: str, issues: Sequence[InputIssue]) -> None:
    """One JSON line per skipped input line: path, line, message."""
    if not issues:
        return
    lines = (orjson.dumps(asdict(issue)) + b"\n" for issue in issues)
    write_atomically(OutputLayout(out_dir).input_issues(run_id), b"".join(lines))


def load_input_issues(out_dir: Path) -> list[dict[str, Any]]:
    """The skipped input lines of the latest run that skipped any (each run reads the whole
    input again, so older runs' lists repeat the same lines)."""
    files = sorted(OutputLayout(out_dir).runs.glob("*.input-issues.jsonl"))
    if not files:
        return []
    return [orjson.loads(line) for line in files[-1].read_bytes().splitlines() if line.strip()]
