"""Batch-mode jobs for the tests: rows on disk, a spec pointing at a simulator."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from batchchat.spec import JobSpec, load_spec
from tests._specs import label_job, merge_sections


def write_rows(path: Path, count: int) -> Path:
    lines = [
        orjson.dumps({"id": f"r{i:05d}", "text": f"review number {i} about item {i * 7}"})
        for i in range(count)
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def batch_spec(
    tmp_path: Path, base_url: str = "simulator", rows: int = 40, **extra: Any
) -> JobSpec:
    """A batch-mode job of ``rows`` rows; ``extra`` sections are merged over the defaults
    (``batch={...}``, ``simulator={...}`` for the built-in simulator's knobs)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = write_rows(tmp_path / "rows.jsonl", rows)
    simulator = extra.pop("simulator", None)
    spec = label_job(
        "batch-test",
        data,
        base_url,
        tmp_path / "out",
        mode="batch",
        batch={"poll_interval_s": 0.05, "max_poll_interval_s": 0.2},
    )
    if simulator is not None:
        spec["endpoint"]["simulator"] = simulator
    return load_spec(merge_sections(spec, extra))


def answer_prefix(text: str) -> str:
    """What the simulator's answer to ``Label: <text>`` starts with (its row's mark)."""
    return hashlib.sha256(f"Label: {text}".encode()).hexdigest()[:8]


def raw_parts(out: Path) -> pl.DataFrame:
    """Every row of every part (no deduplication): what is really on disk."""
    return pl.read_parquet(out / "results" / "part-*.parquet")
