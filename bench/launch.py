"""Run a command and write what it used (CPU, peak RSS) as JSON: the harness's launcher.

    python bench/launch.py USAGE.json CMD [ARG ...]

The benchmark process must not start measured commands itself: when a process execs, Linux
records the peak RSS of the memory it had until then in the new program's ``ru_maxrss``, and
a child forked from the harness (which may have just built a 10M-row input: 300 MB) reported
at least the harness's own peak. This launcher is small, so the peak it passes on is too.
Its exit code is the command's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def main() -> int:
    usage_path, cmd = sys.argv[1], sys.argv[2:]
    child = subprocess.Popen(cmd)  # stdin, stdout and stderr are the launcher's
    _, status, usage = os.wait4(child.pid, 0)
    with open(usage_path, "w", encoding="utf-8") as handle:
        json.dump(
            {"cpu_s": usage.ru_utime + usage.ru_stime, "max_rss_kib": usage.ru_maxrss}, handle
        )
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())
