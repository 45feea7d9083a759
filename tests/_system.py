"""Tests that need a program this machine may not have: skip, saying why, unless demanded.

The README's test command must pass on a machine with Python and nothing else, so a test
that needs Chromium or Airflow skips with the reason and the line that installs it. CI
(``.ci/run``) installs those programs and sets ``BATCHCHAT_REQUIRE_<NAME>``: there a missing
program is a failure, never a silent skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def missing(what: str, reason: str) -> None:
    """Skip (or, where ``BATCHCHAT_REQUIRE_<WHAT>`` is set, fail) for ``reason``."""
    if os.environ.get(f"BATCHCHAT_REQUIRE_{what.upper()}"):
        pytest.fail(f"{reason} (BATCHCHAT_REQUIRE_{what.upper()} is set: it must be there)")
    pytest.skip(reason)


def chromium() -> str:
    """The path of Debian's Chromium, or a skip that says how to install it."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        missing(
            "chromium",
            "chromium is not on PATH, and this test checks the page in a real browser; "
            "install it with: apt-get update && apt-get install -y chromium",
        )
    assert binary is not None
    return binary


@contextlib.contextmanager
def tmpfs(path: Path, size_mb: int) -> Iterator[Callable[[int], None]]:
    """A small tmpfs mounted at ``path`` (a disk that can fill up); yields a function that
    resizes it. Skips where this process may not mount (it needs root)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        missing("tmpfs", f"cannot mount a small tmpfs to fill up ({mounted.stderr.strip()})")

    def resize(size: int) -> None:
        subprocess.run(
            ["mount", "-o", f"remount,size={size}m", str(path)], check=True, capture_output=True
        )

    try:
        yield resize
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def ray_installed() -> None:
    """Skip (or fail where demanded) when Ray Data, the ``ray`` extra, is not installed."""
    try:
        import ray.data  # noqa: F401
    except ImportError:
        missing(
            "ray",
            "Ray Data is not installed, and this test runs a job on Ray; install it with: "
            "pip install -e '.[ray]'",
        )
