"""Issue 15: a server that truly degrades under load must make batchchat back off.

The simulator serves 16 requests at once at full speed (50 ms); past that each answer
slows down in proportion, and past 32 in flight requests get 503 "overloaded" at once
(``--capacity 16``). Its best rate is 320 answers/s however many are in flight up to
32. batchchat is allowed 64 at once, with adaptive concurrency on (the default) and off.
"""

from __future__ import annotations

from harness import (
    Context,
    Metric,
    Runs,
    Simulator,
    batchchat_cmd,
    read_output,
    run_measured,
    workdir,
    write_input,
    write_job,
)

NAME = "degrade"
TITLE = "A server that degrades under load (capacity 16, 503 past 32 in flight)"
IN_QUICK = False
CAPACITY, LATENCY_MS, CONCURRENCY, ROWS = 16, 50, 64, 3_000
BEST_RATE = CAPACITY / (LATENCY_MS / 1000)


def run(ctx: Context) -> list[Metric]:
    runs = Runs()
    with workdir(ctx, NAME) as work:
        data = write_input(ctx.work / "data" / f"small-{ROWS}.parquet", ROWS)
        for rep in range(ctx.repeats):
            for variant, adaptive in (("", True), ("off_", False)):
                flags = ("--capacity", CAPACITY, "--latency-ms", LATENCY_MS)
                with Simulator(*flags) as sim:
                    job = write_job(
                        work / f"{variant}rep{rep}",
                        input_path=data,
                        base_url=sim.base_url,
                        concurrency=CONCURRENCY,
                        adaptive=adaptive,
                    )
                    proc = run_measured(batchchat_cmd(job), timeout_s=900)
                    stats = sim.stats()
                if proc.returncode not in (0, 1):
                    proc.check("batchchat run")
                out = read_output(work / f"{variant}rep{rep}" / "out")
                refused = int(stats["by_status"].get("503", 0)) / max(1, int(stats["requests"]))
                runs.add(variant + "ok", out.ok / ROWS)
                runs.add(variant + "refused", refused)
                runs.add(variant + "rate", (ROWS / out.window_s) / BEST_RATE)
                ctx.log(
                    f"{NAME} rep {rep + 1} adaptive {'on' if adaptive else 'off'}: {out.ok:,} "
                    f"ok, {refused:.1%} of attempts refused, {ROWS / out.window_s:,.0f} rows/s"
                )
    s, off = NAME, "adaptive off"
    return [
        Metric(s, f"rows ok ({ROWS:,})", runs["ok"], "%", ">= 1"),
        Metric(s, "share of attempts refused (503)", runs["refused"], "%", None, False),
        Metric(s, f"in-run rate / the server's best {BEST_RATE:.0f}/s", runs["rate"], "×"),
        Metric(s, f"{off}: rows ok (retries run out against the 503s)", runs["off_ok"], "%"),
        Metric(s, f"{off}: share of attempts refused (503)", runs["off_refused"], "%", None, False),
        Metric(s, f"{off}: in-run rate / the server's best", runs["off_rate"], "×"),
    ]
