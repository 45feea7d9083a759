"""3. Rate-limit precision: the simulator enforces RPM (or TPM) over a sliding 60 s window
that starts full (``--prefill``: the steady state of a long job, not a fresh minute's
burst); batchchat is told the same limit.

Achieved rate is taken over the steady part of the run (the middle 80 % of results by
finish time); the share of 429s comes from the simulator's own counts. For the TPM
variant the rate is in tokens as the simulator charges them (prompt + max_tokens).
"""

from __future__ import annotations

from typing import Any

import polars as pl
from harness import (
    Context,
    Metric,
    Simulator,
    batchchat_cmd,
    read_output,
    run_measured,
    workdir,
    write_input,
    write_job,
)

NAME = "rate_limit"
TITLE = "Rate-limit precision (prefilled window)"
IN_QUICK = True
MAX_TOKENS = 16
#: ~30 prompt tokens + 16 max tokens per request: 276k TPM ≈ 100 requests/s, like 6,000 RPM
VARIANTS: dict[str, dict[str, int]] = {"rpm": {"rpm": 6_000}, "tpm": {"tpm": 276_000}}


def run(ctx: Context) -> list[Metric]:
    n = 1_000 if ctx.quick else 3_000  # ~10 s / ~30 s at 100 requests/s
    variants = ["rpm"] if ctx.quick else ["rpm", "tpm"]
    metrics: list[Metric] = []
    with workdir(ctx, NAME) as work:
        data = write_input(ctx.work / "data" / f"small-{n}.parquet", n)
        for variant in variants:
            metrics += _variant(ctx, work / variant, data, n, variant, VARIANTS[variant])
    return metrics


def _variant(
    ctx: Context, work: Any, data: Any, n: int, variant: str, limits: dict[str, int]
) -> list[Metric]:
    flags = [f"--{name}={value}" for name, value in limits.items()]
    with Simulator(*flags, "--prefill") as sim:
        job = write_job(
            work,
            input_path=data,
            base_url=sim.base_url,
            concurrency=64,
            max_tokens=MAX_TOKENS,
            rpm=limits.get("rpm"),
            tpm=limits.get("tpm"),
        )
        bc = run_measured(batchchat_cmd(job), timeout_s=600)
        stats = sim.stats()
    bc.check("batchchat run")
    out = read_output(work / "out")
    limit_per_s = (limits.get("rpm") or limits["tpm"]) / 60
    # each result's charge against the limit: 1 request, or its tokens as the simulator
    # charges them at admission (prompt + max_tokens)
    frame = (
        pl.scan_parquet(str(work / "out" / "results" / "*.parquet"))
        .select("finished_at", charge=pl.col("prompt_tokens") + MAX_TOKENS)
        .sort("finished_at")
        .collect()
    )
    seconds = (frame["finished_at"] - frame["finished_at"][0]).dt.total_microseconds() / 1e6
    charges = frame["charge"] if variant == "tpm" else pl.Series([1] * frame.height)
    steady = _steady_rate(seconds.to_list(), charges.to_list()) / limit_per_s
    overall = float(charges.sum()) / out.window_s / limit_per_s
    too_many = int(stats["by_status"].get("429", 0))
    share_429 = too_many / max(1, stats["requests"])
    ctx.log(
        f"{NAME} {variant}: steady {steady:.3f} of the limit, overall {overall:.3f}, "
        f"{too_many} × 429 of {stats['requests']} requests, {out.ok}/{n} ok, {bc.wall_s:.1f} s"
    )
    s, what = NAME, f"{variant.upper()} {limits.get('rpm') or limits['tpm']:,}"
    return [
        Metric(s, f"{what}: steady achieved / limit (middle 80 %)", [steady], "×", ">= 0.98"),
        Metric(s, f"{what}: whole run achieved / limit", [overall], "×"),
        Metric(
            s,
            f"{what}: share of requests answered 429",
            [share_429],
            "%",
            "<= 0.005",
            higher_is_better=False,
        ),
        Metric(s, f"{what}: rows finished ok ({n:,} rows)", [out.ok / n], "%", ">= 1"),
    ]


def _steady_rate(finished: list[float], charges: list[int]) -> float:
    """Charge per second between the 10th and the 90th percentile of finish times (the
    charge of the result that opens the window is not counted: it marks the start)."""
    lo, hi = int(len(finished) * 0.1), int(len(finished) * 0.9) - 1
    span = finished[hi] - finished[lo]
    return sum(charges[lo + 1 : hi + 1]) / span if span > 0 else float("nan")
