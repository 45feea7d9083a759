"""8. The Ray engine beside a local run: one job, a rate-limited endpoint, 2 Ray workers.

The simulator enforces 6,000 RPM over a sliding 60 s window that starts full
(``--prefill``, as in the middle of a long job); the job says the same limit. The same
20,000 rows are sent once by ``batchchat run --engine ray --workers 2`` (a local Ray of
2 CPUs, started by the run), then by a local run, each into its own output directory:

- the achieved rate over the steady part of each run (middle 80 % of results by finish
  time) and over the whole run, against the limit; the 429s the simulator counted;
- every row exactly once and ok: in the output, and in the simulator's per-content
  answer counts;
- ``read_results`` of both outputs equal, but for what differs between any two runs
  (:data:`RUN_COLUMNS`);
- rows per second end to end (with Ray's start-up) and CPU per row: the sum over the run's
  whole process tree (the driver, Ray's own processes, its workers), sampled every 0.2 s
  with psutil, since Ray's workers are not the driver's children to wait for.

The Ray run is not pinned to the client core: its workers are meant to use both cores.
One repetition whatever ``--repeats`` says: each takes about 7 minutes (two 200 s runs).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import psutil
from harness import (
    Context,
    Metric,
    Simulator,
    batchchat_cmd,
    read_output,
    workdir,
    write_input,
    write_job,
)

NAME = "ray_engine"
TITLE = "Ray engine: 2 workers, one rate limit (prefilled 6,000 RPM window)"
IN_QUICK = False
RPM = 6_000
WORKERS = 2
#: what differs between two runs of the same rows: when, by which run, in which response,
#: and after how many attempts (a row one run met a 429 on took two)
RUN_COLUMNS = ["run_id", "response_id", "started_at", "finished_at", "latency_ms", "attempts"]


@dataclass
class TreeRun:
    returncode: int
    wall_s: float
    #: CPU seconds (user + system) of the process and every descendant seen
    cpu_s: float
    stderr: str


def run(ctx: Context) -> list[Metric]:
    n = 3_000 if ctx.quick else 20_000  # ~30 s / ~200 s at 100 requests/s
    with workdir(ctx, NAME) as work:
        data = write_input(ctx.work / "data" / f"small-{n}.parquet", n)
        # one simulator for both, its counters zeroed between them: the request hashes
        # (which include the endpoint's address) match, and the second run starts with a
        # window as full as the first's
        with Simulator(f"--rpm={RPM}", "--prefill") as sim:
            runs = {engine: _run(sim, work / engine, data, engine) for engine in ("ray", "local")}
        equal = _same_results(work / "ray" / "out", work / "local" / "out")
    metrics: list[Metric] = []
    for engine, (tree, stats, out) in runs.items():
        steady = _steady(work / engine / "out") / (RPM / 60)
        overall = out.ok / out.window_s / (RPM / 60)
        too_many = int(stats["by_status"].get("429", 0))
        answers = stats["answers"].values()
        once = out.rows == out.ok == out.unique_ids == n and set(answers) == {1}
        ctx.log(
            f"{NAME} {engine}: steady {steady:.3f} of the limit, overall {overall:.3f}, "
            f"{too_many} × 429, {out.ok}/{n} ok, once each: {once}, {tree.wall_s:.1f} s, "
            f"CPU {tree.cpu_s:.1f} s"
        )
        what = f"{engine} ({WORKERS} workers)" if engine == "ray" else "local"
        metrics += [
            Metric(NAME, f"{what}: steady achieved / limit", [steady], "×", ">= 0.95"),
            Metric(NAME, f"{what}: whole run achieved / limit", [overall], "×"),
            Metric(NAME, f"{what}: 429s", [too_many], "", "<= 10", higher_is_better=False),
            Metric(NAME, f"{what}: every row once and ok ({n:,})", [float(once)], "%", ">= 1"),
            Metric(NAME, f"{what}: rows/s end to end", [n / tree.wall_s], "rows/s"),
            Metric(
                NAME,
                f"{what}: CPU ms per row (process tree)",
                [1000 * tree.cpu_s / n],
                "ms",
                higher_is_better=False,
            ),
        ]
    metrics.append(
        Metric(NAME, "read_results: Ray's equal to the local run's", [float(equal)], "%", ">= 1")
    )
    return metrics


def _run(
    sim: Simulator, work: Path, data: Path, engine: str
) -> tuple[TreeRun, dict[str, Any], Any]:
    with urllib.request.urlopen(urllib.request.Request(f"{sim.root}/stats/reset", method="POST")):
        pass
    job = write_job(work, input_path=data, base_url=sim.base_url, concurrency=64, rpm=RPM)
    extra = ["--engine", "ray", "--workers", str(WORKERS)] if engine == "ray" else []
    tree = run_tree(batchchat_cmd(job, *extra), timeout_s=900)
    stats = sim.stats()
    if tree.returncode != 0:
        raise RuntimeError(f"batchchat run ({engine}) exited {tree.returncode}: {tree.stderr}")
    return tree, stats, read_output(work / "out")


def run_tree(cmd: list[str], *, timeout_s: float) -> TreeRun:
    """Run ``cmd`` to its end; CPU is summed over it and every process below it."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
    )
    seen: dict[int, float] = {}
    done = threading.Event()
    sampler = threading.Thread(target=_sample_tree, args=(proc.pid, seen, done))
    sampler.start()
    try:
        _, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
    finally:
        done.set()
        sampler.join()
    return TreeRun(proc.returncode, time.perf_counter() - started, sum(seen.values()), stderr)


def _sample_tree(pid: int, seen: dict[int, float], done: threading.Event) -> None:
    """Each process's latest CPU seconds, every 0.2 s (what it used after the last sample
    before it ended is missed: a slight underestimate)."""
    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(pid)
        while not done.wait(0.2):
            with contextlib.suppress(psutil.NoSuchProcess):
                for process in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
                        times = process.cpu_times()
                        seen[process.pid] = times.user + times.system


def _steady(out: Path) -> float:
    """Results per second between the 10th and the 90th percentile of finish times."""
    finished = (
        pl.scan_parquet(str(out / "results" / "*.parquet")).select("finished_at").collect()
    )["finished_at"].sort()
    seconds = ((finished - finished[0]).dt.total_microseconds() / 1e6).to_list()
    lo, hi = int(len(seconds) * 0.1), int(len(seconds) * 0.9) - 1
    span = seconds[hi] - seconds[lo]
    return (hi - lo) / span if span > 0 else float("nan")


def _same_results(ray_out: Path, local_out: Path) -> bool:
    import batchchat

    ours, theirs = (
        batchchat.read_results(path).drop(RUN_COLUMNS).sort("row_id", "sample")
        for path in (ray_out, local_out)
    )
    return ours.equals(theirs)
