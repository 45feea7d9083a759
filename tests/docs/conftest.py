"""What the pages' examples assume: a clone of the project where the quick start has run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import batchchat
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
