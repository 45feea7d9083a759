"""S4 of issue 15: faults, batchchat side by side with the bare aiohttp loop.

10 % HTTP 500, 2 % dropped connections, 1 % stalls of 15 s; timeout 5 s, 50 ms latency,
concurrency 64, 2,000 rows. The bare loop (with the same 5 s timeout) gives up on every
failed request, so it is fast and loses rows; batchchat must finish every row within
1.3 × the bare loop's wall time.
"""

from __future__ import annotations

from harness import (
    Context,
    Metric,
    Runs,
    Simulator,
    baseline_cmd,
    run_measured,
    workdir,
    write_input,
)

from scenarios._faultmix import FaultMix, run_batchchat

NAME = "faults_s4"
TITLE = "S4: faults (10% 5xx, 2% drops, 1% 15 s stalls; timeout 5 s) vs the bare loop"
IN_QUICK = False
MIX = FaultMix(http_500=0.10, drop=0.02, stall=0.01, stall_s=15, latency_ms=50, timeout_s=5)
ROWS = 2_000


def run(ctx: Context) -> list[Metric]:
    runs = Runs()
    with workdir(ctx, NAME) as work:
        data = write_input(ctx.work / "data" / f"small-{ROWS}.parquet", ROWS)
        for rep in range(ctx.repeats):
            seed = 2000 + rep
            with Simulator(*MIX.flags(seed)) as sim:
                cmd = baseline_cmd(
                    "bare_aiohttp",
                    *("--url", sim.base_url, "--n", ROWS, "--concurrency", MIX.concurrency),
                    *("--timeout-s", MIX.timeout_s),
                )
                bare = run_measured(cmd, timeout_s=600).check("bare_aiohttp baseline")
            bc = run_batchchat(MIX, work / f"rep{rep}", data, ROWS, seed)
            bare_ok = int(bare.json()["ok"])
            runs.add("bare_wall", bare.wall_s)
            runs.add("bare_ok", bare_ok / ROWS)
            runs.add("bc_wall", bc.proc.wall_s)
            runs.add("bc_ok", bc.rows_ok / ROWS)
            runs.add("ratio", bc.proc.wall_s / bare.wall_s)
            runs.add("vs_ideal", bc.window_s / bc.ideal_s)
            ctx.log(
                f"{NAME} rep {rep + 1}: bare {bare.wall_s:.1f} s ({bare_ok:,} ok), batchchat "
                f"{bc.proc.wall_s:.1f} s ({bc.rows_ok:,} ok), ideal {bc.ideal_s:.1f} s"
            )
    s = NAME
    return [
        Metric(s, "bare aiohttp (5 s timeout): wall", runs["bare_wall"], "s", None, False),
        Metric(s, "bare aiohttp: rows ok", runs["bare_ok"], "%"),
        Metric(s, f"batchchat: wall ({ROWS:,} rows)", runs["bc_wall"], "s", None, False),
        Metric(s, "batchchat: rows ok", runs["bc_ok"], "%", ">= 1"),
        Metric(s, "batchchat wall / bare loop wall", runs["ratio"], "×", "<= 1.3", False),
        Metric(s, "batchchat in-run / ideal (lower bound)", runs["vs_ideal"], "×", None, False),
    ]
