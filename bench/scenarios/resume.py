"""6. Resume: re-running a finished 1M-row job must skip every row and send nothing.

The finished output is built once by batchchat itself (all 1M rows against the
simulator, a few minutes) and kept in bench/out/cache/ until a module that decides the
on-disk format or the request identity changes. That build is also the benchmark's one
full 1M-row end-to-end run, so its rows/s and peak RSS are reported (under ``scale``)
when it happens. Each re-run
talks to a fresh simulator at the same address (the address is part of the job's
fingerprint), whose ``/stats`` must count zero requests.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import (
    Context,
    Metric,
    Simulator,
    batchchat_cmd,
    free_port,
    read_output,
    run_measured,
    write_input,
    write_job,
)

import batchchat
from scenarios.scale import memory_metrics

NAME = "resume"
TITLE = "Resume (re-run of a finished 1M-row job)"
IN_QUICK = False
ROWS = 1_000_000


def run(ctx: Context) -> list[Metric]:
    fixture = ctx.cache / "resume-1M"
    metrics = _ensure_fixture(ctx, fixture)
    meta = json.loads((fixture / "meta.json").read_text())
    job = Path(meta["job"])
    walls, cpus, rss, sent = [], [], [], []
    for rep in range(ctx.repeats):
        with Simulator(port=meta["port"]) as sim:
            result = run_measured(batchchat_cmd(job), timeout_s=600)
            stats = sim.stats()
        result.check("batchchat re-run")
        walls.append(result.wall_s)
        cpus.append(result.cpu_s)
        rss.append(result.peak_rss_mb)
        sent.append(float(stats["requests"]))
        ctx.log(f"{NAME} rep {rep + 1}: {result.wall_s:.2f} s, {stats['requests']} requests sent")
    out = read_output(fixture / "out")
    if not (out.rows == out.ok == out.unique_ids == ROWS):
        raise RuntimeError(f"resume fixture output changed: {out}")
    what = f"re-run of a finished {ROWS:,}-row job"
    return [
        *metrics,
        Metric(NAME, f"{what}: wall", walls, "s", higher_is_better=False),
        Metric(NAME, f"{what}: CPU", cpus, "s", higher_is_better=False),
        Metric(NAME, f"{what}: rows skipped per second", [ROWS / w for w in walls], "rows/s"),
        Metric(NAME, f"{what}: peak RSS", rss, "MB", higher_is_better=False),
        Metric(NAME, f"{what}: requests sent", sent, "", "<= 0", higher_is_better=False),
    ]


def _ensure_fixture(ctx: Context, fixture: Path) -> list[Metric]:
    """Build the finished 1M-row output unless a build by the same batchchat source exists."""
    key = _source_key()
    meta_path = fixture / "meta.json"
    if meta_path.exists() and json.loads(meta_path.read_text()).get("key") == key:
        ctx.log(f"{NAME}: reusing the finished 1M-row output in {fixture}")
        return _cached_metrics(json.loads(meta_path.read_text()))
    ctx.log(f"{NAME}: building a finished 1M-row output (all rows sent once; a few minutes)")
    if meta_path.exists():
        meta_path.unlink()
    data = write_input(ctx.cache / "data" / "input-1M.parquet", ROWS)
    port = free_port()
    with Simulator(port=port) as sim:
        job = write_job(
            fixture, input_path=data, base_url=sim.base_url, concurrency=64, name="resume"
        )
        build = run_measured(batchchat_cmd(job, "--force"), timeout_s=3600)
    build.check("batchchat run (1M rows)")
    out = read_output(fixture / "out")
    if not (out.rows == out.ok == out.unique_ids == ROWS):
        raise RuntimeError(f"1M-row run did not finish every row once: {out}")
    ctx.log(f"{NAME}: 1M rows at {ROWS / build.wall_s:,.0f}/s, peak {build.peak_rss_mb:.0f} MB")
    what = "all 1M rows end to end (resume fixture build)"
    metrics = [
        Metric("scale", f"{what}: rows/s", [ROWS / build.wall_s], "rows/s"),
        *memory_metrics(what, build),
    ]
    meta = {
        "key": key,
        "port": port,
        "job": str(job),
        "built": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "metrics": [m.to_dict() for m in metrics],
    }
    meta_path.write_text(json.dumps(meta))
    return metrics


def _cached_metrics(meta: dict[str, Any]) -> list[Metric]:
    """The build's measures, when the build was made by an earlier invocation (marked so)."""
    return [
        Metric(
            item["scenario"],
            f"{item['name']} [cached build of {meta.get('built', '?')}]",
            item["runs"],
            item["unit"],
            item["target"],
        )
        for item in meta.get("metrics", [])
    ]


#: the modules that decide what is on disk and which requests count as done: a change to
#: one of them rebuilds the fixture (a change elsewhere cannot make the re-run send)
_FORMAT_MODULES = ("outdir.py", "resume.py", "results.py", "sink.py", "planner.py", "spec.py")


def _source_key() -> str:
    """A hash of batchchat's on-disk format and request identity, and its version."""
    root = Path(batchchat.__file__).parent
    digest = hashlib.sha256(batchchat.__version__.encode())
    for name in _FORMAT_MODULES:
        path = root / name
        if path.exists():
            digest.update(name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
