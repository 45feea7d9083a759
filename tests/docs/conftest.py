"""The docs' fixtures: a project where the quick start has run, and the built site."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import batchchat
from tests._system import missing
from tests.docs._markdown import ROOT


@pytest.fixture(scope="session")
def docs_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """jobs/, data/samples/ and examples/ with out/quickstart and out/labeling/manual written
    once per session, as a reader who followed Getting started has them. Copy it, don't
    change it."""
    project = tmp_path_factory.mktemp("docs-project")
    for folder in ("jobs", "data/samples", "examples"):
        shutil.copytree(ROOT / folder, project / folder, ignore=shutil.ignore_patterns("out"))
    for job in ("quickstart", "labeling"):
        report = batchchat.run(project / "jobs" / f"{job}.yaml")
        assert report.rows_error == 0, job
    return project


@dataclass(frozen=True)
class BuiltSite:
    path: Path
    seconds: float
    log: str


@pytest.fixture(scope="session")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> BuiltSite:
    """``mkdocs build --strict`` of the site, once per session (skips without the docs extra,
    unless CI demands it with BATCHCHAT_REQUIRE_DOCS)."""
    absent = [
        name
        for name in ("mkdocs", "material", "mkdocstrings_handlers.python")
        if importlib.util.find_spec(name.split(".")[0]) is None
    ]
    if absent:
        missing(
            "docs",
            f"the docs extra is not installed ({', '.join(absent)} missing), and this test "
            "builds the site; install it with: pip install -e '.[docs]'",
        )
    site = tmp_path_factory.mktemp("site")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{log[-5000:]}"
    return BuiltSite(site, time.monotonic() - started, log)
