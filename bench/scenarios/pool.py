"""7. A pool of endpoints (issue 17's acceptance): three simulators -- RPM 600, RPM 1,200
(windows pre-filled, as in the middle of a long job) and one that answers every request
503 -- behind one job of 3,000 rows, each member told its own limit.

Achieved rate over the steady part of the run (the middle 80 % of results by finish time)
against the two healthy members' combined limit (1,800 RPM = 30 rows/s); the share each
healthy member took against its own; how many requests the failing one got (it must be
cooled down after a handful, not tried once per row); every row ok and answered exactly
once, from the simulators' own per-request answer counts.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl
from harness import (
    MODEL,
    Context,
    Metric,
    Simulator,
    batchchat_cmd,
    read_output,
    run_measured,
    workdir,
    write_input,
)

NAME = "pool"
TITLE = "Endpoint pool: RPM 600 + RPM 1,200 + always 503"
IN_QUICK = False
LIMITS = {"slow": 600, "fast": 1_200}


def run(ctx: Context) -> list[Metric]:
    n = 900 if ctx.quick else 3_000  # ~30 s / ~100 s at 30 rows/s
    with workdir(ctx, NAME) as work:
        data = write_input(ctx.work / "data" / f"small-{n}.parquet", n)
        with (
            Simulator("--rpm", LIMITS["slow"], "--prefill") as slow,
            Simulator("--rpm", LIMITS["fast"], "--prefill") as fast,
            Simulator("--fail-503", 1.0) as failing,
        ):
            job = _write_job(work, data, {"slow": slow, "fast": fast, "failing": failing})
            bc = run_measured(batchchat_cmd(job), timeout_s=900)
            stats = {name: sim.stats() for name, sim in (("slow", slow), ("fast", fast))}
            failing_requests = int(failing.stats()["requests"])
    bc.check("batchchat run")
    out = read_output(work / "out")
    frame = (
        pl.scan_parquet(str(work / "out" / "results" / "*.parquet"))
        .select("finished_at", "endpoint")
        .sort("finished_at")
        .collect()
    )
    seconds = (frame["finished_at"] - frame["finished_at"][0]).dt.total_microseconds() / 1e6
    combined = sum(LIMITS.values()) / 60
    steady = _steady_rate(seconds.to_list()) / combined
    shares = Counter(frame["endpoint"].to_list())
    answers: Counter[str] = Counter()
    for counts in stats.values():
        answers.update(counts["answers"])
    once = len(answers) == n and set(answers.values()) == {1}
    ctx.log(
        f"{NAME}: steady {steady:.3f} of 1,800 RPM; rows by endpoint {dict(shares)}; failing "
        f"endpoint got {failing_requests} requests; {out.ok}/{n} ok; each row once: {once}; "
        f"{bc.wall_s:.1f} s"
    )
    window = out.window_s or float("nan")
    per_member = {name: shares[name] / window / (limit / 60) for name, limit in LIMITS.items()}
    return [
        Metric(
            NAME,
            "healthy members: steady achieved / combined limit (middle 80 %)",
            [steady],
            "×",
            ">= 0.9",
        ),
        Metric(
            NAME, "RPM 600 member: its rows / its limit over the run", [per_member["slow"]], "×"
        ),
        Metric(
            NAME, "RPM 1,200 member: its rows / its limit over the run", [per_member["fast"]], "×"
        ),
        Metric(
            NAME,
            "requests the always-503 member got (cooled down, not tried per row)",
            [float(failing_requests)],
            "",
            "<= 15",
            higher_is_better=False,
        ),
        Metric(
            NAME,
            f"rows ok, each answered exactly once ({n:,} rows)",
            [out.ok / n if once else 0.0],
            "%",
            ">= 1",
        ),
    ]


def _write_job(work: Path, data: Path, sims: dict[str, Simulator]) -> Path:
    members: list[dict[str, Any]] = [
        {"name": name, "base_url": sim.base_url, "timeout_s": 30}
        | ({"limits": {"rpm": LIMITS[name]}} if name in LIMITS else {})
        for name, sim in sims.items()
    ]
    spec = {
        "name": "pool",
        "input": {"path": str(data), "id_column": "id"},
        "endpoints": members,
        "request": {
            "model": MODEL,
            "messages": [{"role": "user", "content": "{{ text }}"}],
            "max_tokens": 16,
        },
        "limits": {"max_concurrency": 64},
        "output": {"path": str(work / "out")},
    }
    path = work / "pool.yaml"
    path.write_text(json.dumps(spec, indent=2))
    return path


def _steady_rate(finished: list[float]) -> float:
    """Rows per second between the 10th and the 90th percentile of finish times."""
    lo, hi = int(len(finished) * 0.1), int(len(finished) * 0.9) - 1
    span = finished[hi] - finished[lo]
    return (hi - lo) / span if span > 0 else float("nan")
