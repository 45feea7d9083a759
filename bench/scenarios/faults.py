"""4. Faults: 10 % HTTP 500, 2 % dropped connections, 1 % stalls (no bytes for an hour).

The client's timeout is 2 s, so a stalled attempt must cost 2 s and no more. Every row
must end ok exactly once: checked in the output (one ok row per id) and on the server
(``/stats`` answers: each row's content answered successfully exactly once).

The ideal run time is the longer of two lower bounds. Slots: every answer costs the
latency and every stall the timeout (the simulator sends 500s and drops at once), spread
over all slots: (rows × latency + stalls × timeout) / concurrency. The unluckiest row:
the simulator's faults are a pure function of (seed, row content, arrival count), so
each row's fault sequence is recomputed here exactly; a row ends no sooner than its
earliest start (rows go out in input order, 64 at a time) plus its attempts' costs plus
the retry waits the default policy draws (full jitter: uniform up to 1, 2, 4 … s); the
bound is the median, over 200 random draws of those waits, of the last row to end.

Each repetition runs twice on the same faults: as configured by default (adaptive
concurrency on: timeouts halve the requests in flight, as congestion would) and with
``limits.adaptive: false``, to show what the adaptive limit costs when the faults are
random rather than congestion.
"""

from __future__ import annotations

import random
import statistics
from typing import Any

import polars as pl
from harness import (
    MODEL,
    Context,
    Metric,
    Runs,
    Simulator,
    batchchat_cmd,
    prompt,
    read_output,
    run_measured,
    workdir,
    write_input,
    write_job,
)

from batchchat.simulator.faults import FaultPlan
from batchchat.simulator.stats import key_of
from batchchat.spec import FaultSpec, RetrySpec

NAME = "faults"
TITLE = "Faults (10% 5xx, 2% drops, 1% stalls; timeout 2 s)"
IN_QUICK = True
CONCURRENCY = 64
LATENCY_MS = 50
TIMEOUT_S = 2.0
P_500, P_DROP, P_STALL = 0.10, 0.02, 0.01
FAULTS = ("--fail-500", P_500, "--drop", P_DROP, "--stall", P_STALL)
#: the default retry policy's first wait cap and its cap (spec.RetrySpec defaults)
INITIAL_WAIT_S, MAX_WAIT_S = RetrySpec().initial_wait_s, RetrySpec().max_wait_s


def run(ctx: Context) -> list[Metric]:
    n = 1_920 if ctx.quick else 4_800  # 1.5 s / 3.75 s of work without faults
    runs = Runs()
    with workdir(ctx, NAME) as work:
        data = write_input(ctx.work / "data" / f"small-{n}.parquet", n)
        for rep in range(max(1, ctx.repeats)):
            # the same faults for both: same seed, same rows
            for variant, adaptive in (("", True), ("fixed_", False)):
                where = work / f"{variant}rep{rep}"
                flags = (*FAULTS, "--latency-ms", LATENCY_MS, "--fault-seed", 1000 + rep)
                with Simulator(*flags) as sim:
                    job = write_job(
                        where,
                        input_path=data,
                        base_url=sim.base_url,
                        concurrency=CONCURRENCY,
                        timeout_s=TIMEOUT_S,
                        adaptive=adaptive,
                    )
                    bc = run_measured(batchchat_cmd(job), timeout_s=600)
                    stats = sim.stats()
                if bc.returncode not in (0, 1):
                    bc.check("batchchat run")
                ideal = _ideal_s(n, stats, seed=1000 + rep)
                for key, value in _measure(where / "out", n, stats, bc.wall_s, ideal).items():
                    runs.add(variant + key, value)
                ctx.log(
                    f"{NAME} rep {rep + 1} (adaptive {'on' if adaptive else 'off'}): "
                    f"{runs[variant + 'ok'][-1]:.2%} ok, lost {runs[variant + 'lost'][-1]:.0f}, "
                    f"dup {runs[variant + 'dup'][-1]:.0f}, wall {bc.wall_s:.1f} s = "
                    f"{runs[variant + 'vs_ideal'][-1]:.2f} × ideal, faults {stats['faults']}"
                )
    s, off = NAME, "adaptive concurrency off"
    return [
        Metric(s, f"rows finally ok ({n:,} rows)", runs["ok"], "%", ">= 1"),
        Metric(
            s, "rows lost (output and server)", runs["lost"], "", "<= 0", higher_is_better=False
        ),
        Metric(
            s,
            "rows duplicated (output) or answered twice (server)",
            runs["dup"],
            "",
            "<= 0",
            higher_is_better=False,
        ),
        Metric(
            s,
            "most a row took beyond its timeouts + backoff (a stall past its timeout: ~3600 s)",
            runs["slow"],
            "s",
            "<= 5",
            higher_is_better=False,
        ),
        Metric(
            s,
            "run time in the run / ideal for the faults injected",
            runs["vs_ideal"],
            "×",
            higher_is_better=False,
        ),
        Metric(
            s,
            "wall end to end / ideal (incl. start-up)",
            runs["wall_vs_ideal"],
            "×",
            higher_is_better=False,
        ),
        Metric(s, "attempts per row", runs["attempts"], "", higher_is_better=False),
        Metric(
            s,
            f"{off}: rows ok, none lost or duplicated",
            [
                float(ok == 1 and lost == 0 and dup == 0)
                for ok, lost, dup in zip(
                    runs["fixed_ok"], runs["fixed_lost"], runs["fixed_dup"], strict=True
                )
            ],
            "%",
            ">= 1",
        ),
        Metric(
            s,
            f"{off}: most a row took beyond its timeouts + backoff",
            runs["fixed_slow"],
            "s",
            higher_is_better=False,
        ),
        Metric(
            s,
            f"{off}: run time in the run / ideal",
            runs["fixed_vs_ideal"],
            "×",
            higher_is_better=False,
        ),
    ]


def _measure(
    out_dir: Any, n: int, stats: dict[str, Any], wall_s: float, ideal: float
) -> dict[str, float]:
    summary = read_output(out_dir)
    frame = pl.scan_parquet(str(out_dir / "results" / "*.parquet")).collect()
    ok = frame.filter(pl.col("status") == "ok")
    ok_ids = ok["row_id"].n_unique()
    answers = list(stats.get("answers", {}).values())
    lost = max(n - ok_ids, n - len(answers))
    duplicated = max(ok.height - ok_ids, sum(1 for count in answers if count > 1))
    return {
        "ok": ok_ids / n,
        "lost": float(lost),
        "dup": float(duplicated),
        "slow": _excess_s(frame),
        "vs_ideal": summary.window_s / ideal,
        "wall_vs_ideal": wall_s / ideal,
        "attempts": stats["requests"] / n,
    }


def _ideal_s(n: int, stats: dict[str, Any], *, seed: int) -> float:
    """The shortest run time the faults and the retry policy allow (see the docstring)."""
    stalls = int(stats["faults"].get("stall", 0))
    slots = (n * LATENCY_MS / 1000 + stalls * TIMEOUT_S) / CONCURRENCY
    plan = FaultPlan(FaultSpec(http_500=P_500, drop=P_DROP, stall=P_STALL, seed=seed))
    chains: list[tuple[float, list[float]]] = []  # (start + costs, wait caps) of retried rows
    attempts = 0
    for i in range(n):
        key = key_of({"model": MODEL, "messages": [{"role": "user", "content": prompt(i)}]})
        # rows go out in input order, a slot at a time: row i starts after i // slots answers
        cost, caps = (i // CONCURRENCY + 1) * LATENCY_MS / 1000, list[float]()
        while (fault := plan.pick(key, len(caps), False)) is not None:
            cost += TIMEOUT_S if fault == "stall" else 0.0
            caps.append(min(MAX_WAIT_S, INITIAL_WAIT_S * 2 ** len(caps)))
        attempts += len(caps) + 1
        if caps:
            chains.append((cost, caps))
    if attempts != stats["requests"]:  # the replay must see what the server saw
        raise RuntimeError(f"fault replay: {attempts} attempts, server saw {stats['requests']}")
    return max(slots, _longest_chain_s(chains))


def _longest_chain_s(chains: list[tuple[float, list[float]]], trials: int = 200) -> float:
    """Median over random draws of the longest row: its costs plus its retry waits, each
    drawn as the policy does (uniform between 0 and the cap: full jitter)."""
    rng = random.Random(0)
    longest = [
        max((cost + sum(rng.uniform(0, cap) for cap in caps) for cost, caps in chains), default=0)
        for _ in range(trials)
    ]
    return statistics.median(longest)


def _excess_s(frame: pl.DataFrame) -> float:
    """The most any row took beyond what its attempts may cost, in seconds (0 if none did).

    Allowed: each attempt up to the timeout (+0.5 s slack), each retry wait up to the
    backoff cap (initial 1 s, doubling, full jitter: 2^(attempts-1) - 1 s in all). A stall
    that outlived the timeout would show here as up to an hour (the simulator's stall);
    what does show is time a retried row waits in the queue for a free slot.
    """
    duration = (pl.col("finished_at") - pl.col("started_at")).dt.total_milliseconds() / 1000
    waits = INITIAL_WAIT_S * (2.0 ** (pl.col("attempts") - 1) - 1)
    bound = pl.col("attempts") * (TIMEOUT_S + 0.5) + waits
    excess = frame.select((duration - bound).max()).item()
    return max(0.0, float(excess or 0.0))
