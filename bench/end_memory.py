"""The end of a run on a finished output directory: peak RSS of compaction and the report.

    python bench/end_memory.py OUT_DIR                 # compaction then the report
    python bench/end_memory.py OUT_DIR --step report   # one step alone (`batchchat report`)

Not a test: its numbers depend on the machine. Each step runs in a fresh child process
(so nothing the parent did counts) on the output directory as it is (compaction of a
finished run's directory drops nothing, so it can be measured again and again); the child
prints its RSS after the imports and its peak (VmHWM) after the step. What a step costs
on top of a run is roughly its peak minus the imports' RSS: a real run reaches the end
with ~190 MB already held, some of which the end's allocations reuse.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from _child import run_child, status_kb

STEPS = ("compact", "report", "both")


def child(out_dir: str, step: str) -> None:
    """Run ``step`` on ``out_dir``; print one JSON line of measurements."""
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")  # as `batchchat run` does
    from batchchat.report.build import build_report
    from batchchat.results.ledger import compact_parts, results_dir_of
    from batchchat.runner import run_job  # noqa: F401 -- what a run has imported by its end

    path = Path(out_dir)
    baseline = status_kb("VmRSS")
    started = time.perf_counter()
    dropped = compact_parts(results_dir_of(path)) if step in ("compact", "both") else 0
    compacted_s = time.perf_counter() - started
    # after compaction, as a run's end does: the report need not look for repeats again
    rows = build_report(path, compacted=step == "both").rows_total if step != "compact" else 0
    print(
        json.dumps(
            {
                "step": step,
                "rows": rows,
                "dropped": dropped,
                "compact_s": compacted_s,
                "report_s": time.perf_counter() - started - compacted_s,
                "imports_rss_mb": baseline / 1024,
                "peak_rss_mb": status_kb("VmHWM") / 1024,
            }
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--step", choices=STEPS, action="append")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.out_dir, args.step[0])
        return 0
    for step in args.step or STEPS:
        for _ in range(args.repeats):
            m = run_child([__file__, args.out_dir, "--step", step, "--child"])
            if m is None:
                return 2
            added = m["peak_rss_mb"] - m["imports_rss_mb"]
            print(
                f"{step:<8} imports {m['imports_rss_mb']:6.1f} MB  peak {m['peak_rss_mb']:6.1f} MB"
                f"  (+{added:5.1f})  compact {m['compact_s']:.2f} s  report {m['report_s']:.2f} s"
                f"  rows {m['rows']:,}  dropped {m['dropped']:,}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
