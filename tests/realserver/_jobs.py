"""Drive batchchat as a user does: a job YAML and an input file in a folder, then
``python -m batchchat run job.yaml`` in a subprocess, then the results and the report."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import yaml

import batchchat
from tests.realserver._servers import KEY_ENV, Server


def write_input(folder: Path, rows: list[dict[str, Any]], fmt: str = "jsonl") -> str:
    """The rows as ``input.<fmt>`` (jsonl, csv or parquet); the file name, for the spec."""
    name = f"input.{fmt}"
    frame = pl.DataFrame(rows)
    {"jsonl": frame.write_ndjson, "csv": frame.write_csv, "parquet": frame.write_parquet}[fmt](
        folder / name
    )
    return name


def prompts(n: int, text: str = "Tell me about item {i}.") -> list[dict[str, Any]]:
    return [{"id": f"r{i:05d}", "text": text.format(i=i)} for i in range(n)]


def job_spec(server: Server, input_name: str, **sections: Any) -> dict[str, Any]:
    """A job against ``server`` reading ``input_name``; ``sections`` update its top-level keys
    (dicts are merged one level deep, so ``request={"n": 2}`` keeps the messages)."""
    spec: dict[str, Any] = {
        "name": "conformance",
        "input": {"path": input_name, "id_column": "id"},
        "endpoint": {"base_url": server.base_url, "timeout_s": 60},
        "request": {
            "model": server.model,
            "messages": [{"role": "user", "content": "{{ text }}"}],
            "max_tokens": 8,
            "temperature": 0,
        },
        "output": {"path": "out"},
    }
    if server.key:
        spec["endpoint"]["api_key_env"] = KEY_ENV
    for key, value in sections.items():
        old = spec.get(key)
        spec[key] = {**old, **value} if isinstance(old, dict) and isinstance(value, dict) else value
    return spec


@dataclass
class Run:
    code: int
    out: str  # stdout and stderr together, as a user sees them
    wall_s: float


def _command(job: Path, args: tuple[str, ...]) -> list[str]:
    return [sys.executable, "-m", "batchchat", "run", str(job), *args]


def _env(key: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    if key is not None:
        env[KEY_ENV] = key
    return env


def write_job(folder: Path, spec: dict[str, Any]) -> Path:
    job = folder / "job.yaml"
    job.write_text(yaml.safe_dump(spec, sort_keys=False))
    return job


def run(
    folder: Path, spec: dict[str, Any], *args: str, key: str | None = None, timeout: float = 900
) -> Run:
    """``batchchat run`` on the spec written to ``folder/job.yaml``; waits for it to end."""
    job = write_job(folder, spec)
    start = time.monotonic()
    proc = subprocess.run(
        _command(job, args), env=_env(key), capture_output=True, text=True, timeout=timeout
    )
    return Run(proc.returncode, proc.stdout + proc.stderr, time.monotonic() - start)


def run_and_kill(folder: Path, spec: dict[str, Any], after_s: float, *args: str) -> int:
    """Start ``batchchat run``, SIGKILL it ``after_s`` seconds later; its exit code."""
    job = write_job(folder, spec)
    proc = subprocess.Popen(
        _command(job, args), env=_env(None), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    time.sleep(after_s)
    proc.send_signal(signal.SIGKILL)
    return proc.wait(timeout=30)


def results(folder: Path, out: str = "out") -> pl.DataFrame:
    return batchchat.read_results(folder / out)


def report(folder: Path, out: str = "out") -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((folder / out / "report.json").read_bytes())
    return data


def planned_bodies(folder: Path, spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """custom id → the exact body ``batchchat run`` sends, from ``batchchat plan --out``."""
    job = write_job(folder, spec)
    lines = folder / "planned.jsonl"
    cmd = [sys.executable, "-m", "batchchat", "plan", str(job), "--out", str(lines)]
    subprocess.run(cmd, env=_env(None), check=True, capture_output=True, timeout=120)
    items = [orjson.loads(line) for line in lines.read_bytes().splitlines()]
    return {item["custom_id"]: item["body"] for item in items}
