"""Run batchchat's benchmarks against the local simulator and print one table.

    python bench/run.py                  # everything (a few minutes; more the first time)
    python bench/run.py --quick          # a one-minute subset
    python bench/run.py --only overhead  # one scenario (repeatable)
    python bench/run.py --write-results  # also regenerate the table in bench/RESULTS.md
    python bench/run.py --profile        # py-spy profile of batchchat in the overhead workload

Each run writes bench/out/<timestamp>.json with every repetition of every measure.
See bench/README.md for what each scenario measures and why.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from harness import (  # noqa: E402  (bench/ is not a package: its path is added above)
    PYTHON,
    Context,
    Metric,
    Simulator,
    batchchat_cmd,
    can_pin,
    compile_batchchat,
    pinned,
    write_input,
    write_job,
)
from scenarios import ALL  # noqa: E402

OUT_DIR = BENCH_DIR / "out"
RESULTS = BENCH_DIR / "RESULTS.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.write_results and (args.only or args.quick):
        print(
            "--write-results records a complete run: leave out --only and --quick", file=sys.stderr
        )
        return 2
    compile_batchchat()
    if args.profile:
        return profile(args)
    chosen = [
        s for s in ALL if (s.NAME in args.only if args.only else (s.IN_QUICK or not args.quick))
    ]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    ctx = Context(
        quick=args.quick,
        repeats=args.repeats or (1 if args.quick else 3),
        work=OUT_DIR / "work",
        cache=OUT_DIR / "cache",
    )
    ctx.work.mkdir(parents=True, exist_ok=True)
    if args.rebuild:
        (ctx.cache / "resume-1M" / "meta.json").unlink(missing_ok=True)
    machine = describe_machine()
    print(
        f"batchchat benchmarks: {', '.join(s.NAME for s in chosen)} "
        f"({'quick' if args.quick else 'full'}, {ctx.repeats} repetition(s))",
        file=sys.stderr,
    )
    metrics: list[Metric] = []
    timings: dict[str, float] = {}
    failures: dict[str, str] = {}
    for scenario in chosen:
        print(f"— {scenario.TITLE}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            metrics += scenario.run(ctx)
        except Exception as exc:  # one broken scenario must not hide the others' results
            failures[scenario.NAME] = f"{type(exc).__name__}: {exc}"
            print(f"  ! {scenario.NAME} failed: {failures[scenario.NAME]}", file=sys.stderr)
        timings[scenario.NAME] = time.perf_counter() - started
    table = render_table(metrics)
    print(table)
    for name, message in failures.items():
        print(f"FAILED {name}: {message.splitlines()[0]}")
    record = {
        "date": stamp,
        "mode": "quick" if args.quick else "full",
        "repeats": ctx.repeats,
        "machine": machine,
        "scenario_seconds": timings,
        "load_average_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "failures": failures,
        "metrics": [m.to_dict() for m in metrics],
    }
    OUT_DIR.mkdir(exist_ok=True)
    path = OUT_DIR / f"{stamp}.json"
    path.write_text(json.dumps(record, indent=2))
    print(f"\nwritten: {path.relative_to(BENCH_DIR.parent)}", file=sys.stderr)
    if args.write_results:
        write_results(record, table)
        print(f"written: {RESULTS.relative_to(BENCH_DIR.parent)}", file=sys.stderr)
    missed = [m for m in metrics if m.met is False]
    return 1 if failures else (2 if missed and args.strict else 0)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    names = [s.NAME for s in ALL]
    parser = argparse.ArgumentParser(
        description="batchchat benchmarks against the local simulator (see bench/README.md).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="scenarios: " + ", ".join(f"{s.NAME} ({s.TITLE})" for s in ALL),
    )
    parser.add_argument("--quick", action="store_true", help="a one-minute subset, 1 repetition")
    parser.add_argument(
        "--only",
        action="append",
        choices=names,
        metavar="NAME",
        help=f"run only this scenario (repeatable): {', '.join(names)}",
    )
    parser.add_argument("--repeats", type=int, help="repetitions per measure (default 3; quick 1)")
    parser.add_argument(
        "--write-results",
        action="store_true",
        help="regenerate the measured part of bench/RESULTS.md",
    )
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="rebuild the finished 1M-row output the resume scenario re-runs "
        "(its build is the benchmark's one full 1M-row run)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 2 when a target is missed")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile batchchat (py-spy, else cProfile) in the overhead workload",
    )
    return parser.parse_args(argv)


# -- the table --------------------------------------------------------------------------------


def fmt(value: float, unit: str) -> str:
    if value != value:  # NaN
        return "n/a"
    if unit == "%":
        return f"{value * 100:.2f}%" if value < 0.9995 or value > 1 else "100%"
    if unit == "rows/s":
        return f"{value:,.0f}/s"
    if unit == "MB":
        return f"{value:,.0f} MB"
    if unit == "ms":
        return f"{value:.3f} ms"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "×":
        return f"{value:.3f}×"
    return f"{value:,.0f}" if value == int(value) else f"{value:,.3f}"


def render_table(metrics: list[Metric]) -> str:
    """One Markdown table (readable as plain text too): the median of each measure."""
    rows = [("scenario", "measure", "median", "runs", "target", "met")]
    for m in metrics:
        target = ""
        if m.target:
            op, _, bound = m.target.partition(" ")
            target = f"{op.replace('>=', '≥').replace('<=', '≤')} {fmt(float(bound), m.unit)}"
        met = {True: "yes", False: "**NO**", None: ""}[m.met]
        runs = ", ".join(fmt(v, m.unit) for v in m.runs) if len(m.runs) > 1 else ""
        rows.append((m.scenario, m.name, fmt(m.value, m.unit), runs, target, met))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if index == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


# -- the machine and RESULTS.md -----------------------------------------------------------------


def describe_machine() -> dict[str, Any]:
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        match = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        cpu = match.group(1).strip() if match else cpu
    memory = "unknown"
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        match = re.search(r"MemTotal:\s*(\d+)", meminfo.read_text())
        memory = f"{int(match.group(1)) / 2**20:.0f} GiB" if match else memory
    versions = {"python": platform.python_version()}
    for package in ("batchchat", "aiohttp", "openai", "polars", "pyarrow", "orjson"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": memory,
        "os": f"{platform.system()} {platform.release()}",
        "pinned": "client on core 0, simulator on core 1" if can_pin() else "not pinned",
        "versions": versions,
        "commit": _git_commit(),
        "load_average_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(BENCH_DIR), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(BENCH_DIR.parent), "status", "--porcelain", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return out + (" + uncommitted changes in src/" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_results(record: dict[str, Any], table: str) -> None:
    """Replace the measured block of RESULTS.md; the hand-written analysis around it stays."""
    machine = record["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
    block = "\n".join(
        [
            BEGIN,
            f"Run {record['date']} ({record['mode']} mode, medians of {record['repeats']} "
            f"repetition(s) where a measure has several runs; ratios within each repetition).",
            "",
            f"- Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory']}, "
            f"{machine['os']}; {machine['pinned']}.",
            f"- Versions: {versions}.",
            f"- Commit: {machine['commit']}.",
            f"- Load average (1 min) at start {machine['load_average_at_start']:.2f}, at end "
            f"{record['load_average_at_end']:.2f} (other work on the machine shows here).",
            "- Scenario times: "
            + ", ".join(
                f"{name} {seconds:.0f} s" for name, seconds in record["scenario_seconds"].items()
            ),
            "",
            table,
            *(f"\nFAILED {name}: {msg}" for name, msg in record["failures"].items()),
            END,
        ]
    )
    text = RESULTS.read_text() if RESULTS.exists() else f"# Benchmark results\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text:
        text += f"\n{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    RESULTS.write_text(head + block + tail)


# -- profiling ---------------------------------------------------------------------------------


def profile(args: argparse.Namespace) -> int:
    """Profile one `batchchat run` of the overhead workload and print where the time goes."""
    n = 20_000
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    work = OUT_DIR / "work" / "profile"
    shutil.rmtree(work, ignore_errors=True)
    data = write_input(OUT_DIR / "work" / "data" / f"small-{n}.parquet", n)
    py_spy = shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy")
    with Simulator() as sim:
        job = write_job(work, input_path=data, base_url=sim.base_url, concurrency=64)
        if Path(py_spy).exists():
            raw = OUT_DIR / f"profile-{stamp}.txt"
            speedscope = OUT_DIR / f"profile-{stamp}.speedscope.json"
            for fmt_name, target in (("raw", raw), ("speedscope", speedscope)):
                shutil.rmtree(work / "out", ignore_errors=True)
                cmd = [
                    py_spy,
                    "record",
                    "--rate",
                    "250",
                    "--format",
                    fmt_name,
                    "-o",
                    str(target),
                    "--",
                    *batchchat_cmd(job),
                ]
                subprocess.run(pinned(cmd, 0), check=True, capture_output=True)
            print(summarize_collapsed(raw.read_text()))
            print(f"\nspeedscope profile: {speedscope} (open at speedscope.app)", file=sys.stderr)
        else:
            stats_file = OUT_DIR / f"profile-{stamp}.prof"
            cmd = [PYTHON, "-m", "cProfile", "-o", str(stats_file), *batchchat_cmd(job)[1:]]
            subprocess.run(pinned(cmd, 0), check=True)
            import pstats

            pstats.Stats(str(stats_file)).sort_stats("cumulative").print_stats(40)
    return 0


def summarize_collapsed(text: str, top: int = 25) -> str:
    """Where the samples are, from py-spy's collapsed stacks: own time by package and by
    function, and inclusive time of batchchat's own functions."""
    own: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = [_short(frame) for frame in stack.split(";")]
        own[frames[-1]] += count
        importing = any(f.startswith("_find_and_load ") for f in frames)
        by_package["(start-up: importing modules)" if importing else _package(frames[-1])] += count
        for frame in {f for f in frames if "(batchchat/" in f}:
            inclusive[frame] += count
    lines = [f"{total} samples", "", "own time by package:"]
    lines += [f"  {c / total:6.1%}  {p}" for p, c in by_package.most_common(12)]
    lines += ["", "own time by function (where the CPU is):"]
    lines += [f"  {c / total:6.1%}  {f}" for f, c in own.most_common(top)]
    lines += ["", "batchchat functions, inclusive time (with everything they call):"]
    lines += [f"  {c / total:6.1%}  {f}" for f, c in inclusive.most_common(top)]
    return "\n".join(lines)


def _package(frame: str) -> str:
    """The top-level package of a shortened frame."""
    where = frame.rpartition("(")[2]
    head = where.split("/", 1)[0].rstrip(")")
    return head.removesuffix(".py") or "other"


def _short(frame: str) -> str:
    """``func (/long/path/site-packages/pkg/mod.py:12)`` → ``func (pkg/mod.py)``."""
    match = re.match(r"(.*) \((.*?):\d+\)$", frame)
    if not match:
        return frame
    function, path = match.groups()
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{function} ({path})"


if __name__ == "__main__":
    sys.exit(main())
