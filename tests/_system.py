"""Tests that need a program this machine may not have: skip, saying why, unless demanded.

The README's test command must pass on a machine with Python and nothing else, so a test
that needs Chromium or Airflow skips with the reason and the line that installs it. CI
(``.ci/run``) installs those programs and sets ``BATCHCHAT_REQUIRE_<NAME>``: there a missing
program is a failure, never a silent skip.
"""

from __future__ import annotations

import os
import shutil

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
