"""Issue 15: 20,000 rows under 15 % mixed faults, default settings (adaptive on) and off.

10 % HTTP 500, 2 % dropped connections, 3 % stalls of 15 s; timeout 5 s, 50 ms latency,
concurrency 64. The run time in the run against the ideal lower bound (see
``_faultmix``): target ≤ 1.2 × with the default settings.
"""

from __future__ import annotations

from harness import Context, Metric, Runs, workdir, write_input

from scenarios._faultmix import FaultMix, run_batchchat

NAME = "faults_20k"
TITLE = "20,000 rows, 15% mixed faults (10% 5xx, 2% drops, 3% 15 s stalls; timeout 5 s)"
IN_QUICK = False
MIX = FaultMix(http_500=0.10, drop=0.02, stall=0.03, stall_s=15, latency_ms=50, timeout_s=5)
ROWS = 20_000


def run(ctx: Context) -> list[Metric]:
    runs = Runs()
    with workdir(ctx, NAME) as work:
        data = write_input(ctx.work / "data" / f"small-{ROWS}.parquet", ROWS)
        for rep in range(ctx.repeats):
            for variant, adaptive in (("", True), ("off_", False)):
                bc = run_batchchat(
                    MIX, work / f"{variant}rep{rep}", data, ROWS, 3000 + rep, adaptive=adaptive
                )
                runs.add(variant + "ok", float(bc.rows_ok == bc.unique == bc.rows == ROWS))
                runs.add(variant + "vs_ideal", bc.window_s / bc.ideal_s)
                runs.add(variant + "wall", bc.proc.wall_s)
                runs.add("ideal", bc.ideal_s)
                ctx.log(
                    f"{NAME} rep {rep + 1} adaptive {'on' if adaptive else 'off'}: "
                    f"{bc.rows_ok:,} ok, in-run {bc.window_s:.1f} s, ideal {bc.ideal_s:.1f} s"
                )
    s, off = NAME, "adaptive off"
    return [
        Metric(s, "every row ok once (default settings)", runs["ok"], "%", ">= 1"),
        Metric(s, "in-run / ideal, default settings", runs["vs_ideal"], "×", "<= 1.2", False),
        Metric(s, "wall end to end, default settings", runs["wall"], "s", None, False),
        Metric(s, "ideal (lower bound)", runs["ideal"], "s", None, False),
        Metric(s, f"{off}: every row ok once", runs["off_ok"], "%", ">= 1"),
        Metric(s, f"{off}: in-run / ideal", runs["off_vs_ideal"], "×", None, False),
    ]
