"""5. Scale: 1M- and 10M-row Parquet inputs; peak RSS and rows/s, side by side.

Sending all 10M rows at a few thousand rows/s takes about an hour, so the scenario
sends the same number of rows (``--limit``) from the 1M-row file and from the 10M-row
file: if memory depended on the input's size, the 10M run would show it. Flatness
over time is read from RSS sampled during each run: the median RSS at 70–90 % of the
run minus that at 25–45 % (start-up checks and the end-of-run report left out).
Then every row goes through the planner with nothing sent: reading and skipping all
1M and all 10M rows (what a resume does; this is the part that touches every row of the
file), and rendering every request of the 1M-row file (10M would take minutes).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from harness import (
    PYTHON,
    Context,
    Metric,
    ProcResult,
    Simulator,
    batchchat_cmd,
    read_output,
    run_measured,
    workdir,
    write_input,
    write_job,
)

NAME = "scale"
TITLE = "Scale (1M vs 10M input rows)"
IN_QUICK = False
CONCURRENCY = 64
SIZES = {"1M": 1_000_000, "10M": 10_000_000}


def run(ctx: Context) -> list[Metric]:
    limit = 30_000 if ctx.quick else 100_000
    metrics: list[Metric] = []
    with workdir(ctx, NAME) as work:
        for label, rows in SIZES.items():
            data = write_input(ctx.cache / "data" / f"input-{label}.parquet", rows)
            with Simulator() as sim:
                job = write_job(
                    work / label, input_path=data, base_url=sim.base_url, concurrency=CONCURRENCY
                )
                bc = run_measured(batchchat_cmd(job, "--limit", str(limit)), timeout_s=1800)
            bc.check(f"batchchat run on {label} rows")
            out = read_output(work / label / "out")
            if not (out.rows == out.ok == out.unique_ids == limit):
                raise RuntimeError(f"batchchat output ({label}): {out}, expected {limit} ok")
            ctx.log(
                f"{NAME} {label}: {limit:,} rows at {limit / bc.wall_s:,.0f}/s, peak RSS "
                f"{bc.peak_rss_mb:.0f} MB, RSS growth over the run {_growth_mb(bc):+.0f} MB"
            )
            what = f"run {limit:,} rows of the {label}-row file"
            metrics += [
                Metric(NAME, f"{what}: rows/s end to end", [limit / bc.wall_s], "rows/s"),
                *memory_metrics(what, bc),
            ]
        peaks = [m.value for m in metrics if m.name.endswith("peak RSS, whole run")]
        metrics.append(
            Metric(
                NAME,
                "peak RSS 10M-row file / 1M-row file",
                [peaks[1] / peaks[0]],
                "×",
                "<= 1.1",
                higher_is_better=False,
            )
        )
        metrics += _plan_only(ctx, work)
    return metrics


def memory_metrics(what: str, result: ProcResult) -> list[Metric]:
    """Peak RSS of the whole run and of its sending phase, and RSS growth while sending."""
    return [
        # issue 15: 200 MB at any size
        Metric(NAME, f"{what}: peak RSS, whole run", [result.peak_rss_mb], "MB", "<= 200", False),
        Metric(
            NAME,
            f"{what}: peak RSS while sending (10–90 % of the run)",
            [result.peak_rss_between(0.1, 0.9)],
            "MB",
            higher_is_better=False,
        ),
        Metric(
            NAME,
            f"{what}: RSS growth while sending (70–90 % vs 25–45 % of the run)",
            [_growth_mb(result)],
            "MB",
            higher_is_better=False,
        ),
    ]


def _growth_mb(result: ProcResult) -> float:
    """Median RSS at 70–90 % of the run minus that at 25–45 %: growth while sending (start-up
    checks before and the end-of-run compaction and report after are left out)."""
    early = [rss for t, rss in result.rss_samples if 0.25 <= t / result.wall_s <= 0.45]
    late = [rss for t, rss in result.rss_samples if 0.70 <= t / result.wall_s <= 0.90]
    if not early or not late:
        return float("nan")
    return statistics.median(late) - statistics.median(early)


#: a child that plans every row of a job (``skip_all``: reads every row, renders none)
_PLAN_CHILD = """
import sys, time
from batchchat.planning.planner import compile_plan
from batchchat.spec import load_spec
plan = compile_plan(load_spec(sys.argv[1]))
skip = (lambda row_ids, sample: row_ids.is_not_null()) if sys.argv[2] == "skip" else None
started = time.perf_counter()
count = sum(1 for _ in plan.requests(skip=skip))
print(count, time.perf_counter() - started)
"""


def _plan_only(ctx: Context, work: Path) -> list[Metric]:
    """Every row of each file through the planner, nothing sent: reading + skipping all rows
    (what a resume does) for 1M and 10M; rendering every request for the 1M file."""
    passes = [("1M", "skip"), ("10M", "skip"), ("1M", "plan")]
    if ctx.quick:
        passes = [("1M", "skip"), ("1M", "plan")]
    metrics = []
    for label, mode in passes:
        data = write_input(ctx.cache / "data" / f"input-{label}.parquet", SIZES[label])
        job = write_job(
            work / f"plan-{label}",
            input_path=data,
            base_url="http://127.0.0.1:9/v1",
            concurrency=CONCURRENCY,
        )
        result = run_measured([PYTHON, "-c", _PLAN_CHILD, str(job), mode], timeout_s=1800)
        result.check(f"planning {label} rows")
        count, seconds = result.stdout.split()
        what = (
            f"read + skip all {label} rows (nothing rendered)"
            if mode == "skip"
            else f"plan all {label} rows (render, hash, estimate)"
        )
        metrics += [
            Metric(NAME, f"{what}: rows/s", [SIZES[label] / float(seconds)], "rows/s"),
            Metric(NAME, f"{what}: peak RSS", [result.peak_rss_mb], "MB", higher_is_better=False),
        ]
        ctx.log(
            f"{NAME} {what}: {SIZES[label] / float(seconds):,.0f} rows/s, "
            f"peak {result.peak_rss_mb:.0f} MB ({count} requests)"
        )
    return metrics
