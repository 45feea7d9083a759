"""2. Latency hiding: 200 ms per answer, concurrency 256 → ideal 256 / 0.2 s = 1,280 rows/s.

What it shows: whether a client keeps every slot busy. The rate is taken over the run
itself (first request sent → last answer; for batchchat from the result timestamps),
so process start-up does not count against it; the end-to-end rate is shown too.
"""

from __future__ import annotations

from harness import (
    Context,
    Metric,
    Simulator,
    baseline_cmd,
    batchchat_cmd,
    read_output,
    run_measured,
    workdir,
    write_input,
    write_job,
)

NAME = "latency"
TITLE = "Latency hiding (200 ms, concurrency 256)"
IN_QUICK = True
CONCURRENCY = 256
LATENCY_MS = 200
IDEAL = CONCURRENCY / (LATENCY_MS / 1000)


def run(ctx: Context) -> list[Metric]:
    n = 2_560 if ctx.quick else 10_240  # 2 s / 8 s at the ideal rate
    n_openai = 1_280 if ctx.quick else 5_120
    runs: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        runs.setdefault(key, []).append(value)

    with workdir(ctx, NAME) as work:
        data = write_input(ctx.work / "data" / f"small-{n}.parquet", n)
        for rep in range(ctx.repeats):
            with Simulator("--latency-ms", LATENCY_MS) as sim:
                bare = run_measured(
                    baseline_cmd(
                        "bare_aiohttp",
                        "--url",
                        sim.base_url,
                        "--n",
                        n,
                        "--concurrency",
                        CONCURRENCY,
                    ),
                    timeout_s=300,
                ).check("bare aiohttp baseline")
                oai = run_measured(
                    baseline_cmd(
                        "openai_client",
                        "--url",
                        sim.base_url,
                        "--n",
                        n_openai,
                        "--concurrency",
                        CONCURRENCY,
                    ),
                    timeout_s=300,
                ).check("openai baseline")
                job = write_job(
                    work / f"rep{rep}",
                    input_path=data,
                    base_url=sim.base_url,
                    concurrency=CONCURRENCY,
                )
                bc = run_measured(batchchat_cmd(job), timeout_s=600).check("batchchat run")
            out = read_output(work / f"rep{rep}" / "out")
            if not (out.rows == out.ok == out.unique_ids == n):
                raise RuntimeError(f"batchchat output: {out} (expected {n} ok rows)")
            b, o = bare.json(), oai.json()
            if b["ok"] != n or o["ok"] != n_openai:
                raise RuntimeError(f"baselines did not finish every row: {b} {o}")
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
