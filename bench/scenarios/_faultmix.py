"""What the issue-15 fault scenarios share: a fault mix, batchchat under it, and its ideal.

The ideal here is a lower bound no client beats: every answer costs the latency and every
stall the timeout, spread over all slots; and no row ends before its own chain of attempts
(its earliest start plus the cost of each failed attempt, retried at once). The simulator's
faults are a pure function of (seed, row content, arrival count), so each row's chain is
replayed exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import (
    MODEL,
    ProcResult,
    Simulator,
    batchchat_cmd,
    prompt,
    read_output,
    run_measured,
    write_job,
)

from batchchat.simulator.faults import FaultPlan
from batchchat.simulator.stats import key_of
from batchchat.spec import FaultSpec


@dataclass(frozen=True)
class FaultMix:
    """The simulator's faults and latency, and the client's timeout and concurrency."""

    http_500: float
    drop: float
    stall: float
    stall_s: float
    latency_ms: float
    timeout_s: float
    concurrency: int = 64

    def flags(self, seed: int) -> tuple[object, ...]:
        return (
            *("--fail-500", self.http_500, "--drop", self.drop, "--stall", self.stall),
            *("--stall-s", self.stall_s, "--latency-ms", self.latency_ms, "--fault-seed", seed),
        )

    def ideal_s(self, n: int, stats: dict[str, Any], seed: int) -> float:
        """The lower bound of the docstring, checked against what the server saw."""
        stalls = int(stats["faults"].get("stall", 0))
        latency, stall_cost = self.latency_ms / 1000, min(self.stall_s, self.timeout_s)
        slots = (n * latency + stalls * stall_cost) / self.concurrency
        spec = FaultSpec(http_500=self.http_500, drop=self.drop, stall=self.stall, seed=seed)
        plan, longest, attempts = FaultPlan(spec), 0.0, 0
        for i in range(n):
            key = key_of({"model": MODEL, "messages": [{"role": "user", "content": prompt(i)}]})
            cost, tries = (i // self.concurrency + 1) * latency, 0
            while (fault := plan.pick(key, tries, False)) is not None:
                cost += stall_cost if fault == "stall" else 0.0
                tries += 1
            attempts += tries + 1
            longest = max(longest, cost)
        if attempts != stats["requests"]:  # the replay must see what the server saw
            raise RuntimeError(f"fault replay: {attempts} attempts, server saw {stats['requests']}")
        return max(slots, longest)


@dataclass
class FaultRun:
    proc: ProcResult
    stats: dict[str, Any]
    rows_ok: int
    rows: int
    unique: int
    window_s: float
    ideal_s: float


def run_batchchat(
    mix: FaultMix, where: Path, data: Path, n: int, seed: int, *, adaptive: bool = True
) -> FaultRun:
    """One ``batchchat run`` of ``data`` against a simulator with ``mix``'s faults."""
    with Simulator(*mix.flags(seed)) as sim:
        job = write_job(
            where,
            input_path=data,
            base_url=sim.base_url,
            concurrency=mix.concurrency,
            timeout_s=mix.timeout_s,
            adaptive=adaptive,
        )
        proc = run_measured(batchchat_cmd(job), timeout_s=1800)
        stats = sim.stats()
    if proc.returncode not in (0, 1):
        proc.check("batchchat run")
    out = read_output(where / "out")
    return FaultRun(
        proc, stats, out.ok, out.rows, out.unique_ids, out.window_s, mix.ideal_s(n, stats, seed)
    )
