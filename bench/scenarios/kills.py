"""7. Kill -9: a 40,000-request run killed ten times at random moments, each kill followed
by a re-run, then a last run to the end.

Every answer is on disk a moment after it arrives (the journal), so a kill throws away
only the requests in flight and the answers of the last tens of milliseconds; each
re-run sends those again. The measure is how many answers the server gave beyond the
40,000 needed (the simulator counts each row's successful answers), against the target
of at most ``max_concurrency`` per kill. The output must hold exactly one ok row per id:
nothing lost, nothing twice.
"""

from __future__ import annotations

import random
import subprocess
import time

from harness import (
    CLIENT_CORE,
    Context,
    Metric,
    Runs,
    Simulator,
    batchchat_cmd,
    pinned,
    read_output,
    run_measured,
    workdir,
    write_input,
    write_job,
)

NAME = "kills"
TITLE = "Kill -9 (40,000 requests, 10 kills at random moments, a re-run after each)"
IN_QUICK = False
ROWS = 40_000
KILLS = 10
CONCURRENCY = 64
LATENCY_MS = 20
#: a run needs ~1.2 s to start sending; each is killed at a random moment after that
KILL_AFTER_S = (1.5, 4.0)


def run(ctx: Context) -> list[Metric]:
    data = write_input(ctx.cache / "data" / "input-40k.parquet", ROWS)
    runs = Runs()
    for rep in range(ctx.repeats):
        rng = random.Random(rep)
        with workdir(ctx, NAME) as work, Simulator("--latency-ms", LATENCY_MS) as sim:
            job = write_job(work, input_path=data, base_url=sim.base_url, concurrency=CONCURRENCY)
            for _ in range(KILLS):
                _run_and_kill(batchchat_cmd(job), rng.uniform(*KILL_AFTER_S))
            run_measured(batchchat_cmd(job), timeout_s=900).check("batchchat final re-run")
            stats = sim.stats()
            out = read_output(work / "out")
        extra = int(stats["answered"]) - ROWS
        runs.add("extra", float(extra))
        runs.add("lost", float(ROWS - out.unique_ids))
        runs.add("twice", float(out.rows - out.unique_ids))
        runs.add("not ok", float(out.unique_ids - out.ok))
        ctx.log(
            f"{NAME} rep {rep + 1}: {extra} answers beyond the {ROWS:,} needed over {KILLS} "
            f"kills; output {out.rows:,} rows, {out.unique_ids:,} ids, {out.ok:,} ok"
        )
    most = CONCURRENCY * KILLS
    worst = "the worst repetition"
    return [
        Metric(NAME, "answers beyond the 40,000 needed", runs["extra"], "", f"<= {most}", False),
        *(
            Metric(NAME, what, [max(runs[key])], "", "<= 0", False, note=worst)
            for key, what in (
                ("lost", "rows lost"),
                ("twice", "rows twice in the output"),
                ("not ok", "rows not ok at the end"),
            )
        ),
    ]


def _run_and_kill(cmd: list[str], after_s: float) -> None:
    """Start a run on the client core and SIGKILL it ``after_s`` seconds later."""
    process = subprocess.Popen(
        pinned(cmd, CLIENT_CORE), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        time.sleep(after_s)  # the moment of the kill, not a wait for a result
    finally:
        process.kill()
        process.wait()
