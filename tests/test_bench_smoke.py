"""bench/run.py stays runnable: its --help lists every scenario (the benchmarks themselves
are not part of the test suite; see bench/README.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "run.py"


def test_bench_help_lists_every_scenario() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    for name in ("overhead", "latency", "rate_limit", "faults", "scale", "resume", "pool"):
        assert name in done.stdout
    assert "--quick" in done.stdout
