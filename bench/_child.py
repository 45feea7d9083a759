"""What the memory scripts (end_memory.py, plan_memory.py) share: a measured step runs in a
fresh child process of the script, which reports one JSON line. No third-party import here:
it would count in the child's RSS."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def run_child(args: list[str]) -> dict[str, Any] | None:
    """Run ``python ARGS`` and return the last line it printed, parsed; None (its stderr
    shown) when it failed."""
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return None
    parsed: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return parsed


def status_kb(field: str) -> int:
    """A ``/proc/self/status`` field in KiB: ``VmRSS`` now, ``VmHWM`` the peak (unlike
    ``ru_maxrss``, which a child inherits from its parent through exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")
