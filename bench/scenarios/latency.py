"""2. Latency hiding: 200 ms per answer, concurrency 256 → ideal 256 / 0.2 s = 1,280 rows/s.

What it shows: whether a client keeps every slot busy. The rate is taken over the run
itself (first request sent → last answer; for batchchat from the result timestamps),
so process start-up does not count against it; the end-to-end rate is shown too.
"""

from __future__ import annotations

from harness import Context, Metric, Runs, Simulator, head_to_head, workdir, write_input

NAME = "latency"
TITLE = "Latency hiding (200 ms, concurrency 256)"
IN_QUICK = True
CONCURRENCY = 256
LATENCY_MS = 200
IDEAL = CONCURRENCY / (LATENCY_MS / 1000)


def run(ctx: Context) -> list[Metric]:
    n = 2_560 if ctx.quick else 10_240  # 2 s / 8 s at the ideal rate
    n_openai = 1_280 if ctx.quick else 5_120
    runs = Runs()
    add = runs.add

    with workdir(ctx, NAME) as work:
        data = write_input(ctx.work / "data" / f"small-{n}.parquet", n)
        for rep in range(ctx.repeats):
            with Simulator("--latency-ms", LATENCY_MS) as sim:
                race = head_to_head(
                    sim,
                    work / f"rep{rep}",
                    data=data,
                    n=n,
                    n_openai=n_openai,
                    concurrency=CONCURRENCY,
                )
            bare, oai, bc, out = race.bare, race.openai, race.batchchat, race.output
            b, o = bare.json(), oai.json()
            add("bare", n / b["window_s"] / IDEAL)
            add("openai", n_openai / o["window_s"] / IDEAL)
            add("bc", n / out.window_s / IDEAL)
            add("bare_e2e", n / bare.wall_s)
            add("openai_e2e", n_openai / oai.wall_s)
            add("bc_e2e", n / bc.wall_s)
            add("ratio", runs["bc"][-1] / runs["bare"][-1])
            add("cpu_bare", bare.cpu_s * 1000 / n)
            add("cpu_bc", bc.cpu_s * 1000 / n)
            ctx.log(
                f"{NAME} rep {rep + 1}: of ideal: bare {runs['bare'][-1]:.0%}, openai "
                f"{runs['openai'][-1]:.0%}, batchchat {runs['bc'][-1]:.0%}"
            )

    s = NAME
    return [
        Metric(s, "bare aiohttp: in-run rate / ideal 1,280/s", runs["bare"], "×"),
        Metric(s, "openai AsyncOpenAI: in-run rate / ideal", runs["openai"], "×"),
        Metric(s, "batchchat run: in-run rate / ideal", runs["bc"], "×", ">= 0.9"),
        Metric(s, "batchchat / bare aiohttp, in-run rate", runs["ratio"], "×"),
        Metric(s, "CPU per request: bare aiohttp", runs["cpu_bare"], "ms", higher_is_better=False),
        Metric(
            s,
            "CPU per request: batchchat (whole process)",
            runs["cpu_bc"],
            "ms",
            higher_is_better=False,
        ),
        Metric(s, f"bare aiohttp: rows/s end to end ({n:,} req)", runs["bare_e2e"], "rows/s"),
        Metric(s, f"openai: rows/s end to end ({n_openai:,} req)", runs["openai_e2e"], "rows/s"),
        Metric(
            s, f"batchchat: rows/s end to end incl. start-up ({n:,} rows)", runs["bc_e2e"], "rows/s"
        ),
    ]
