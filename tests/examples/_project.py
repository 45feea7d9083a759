"""A small copy of the project for example tests: the real jobs/labeling.yaml on a few reviews."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: the batchchat command installed beside the interpreter running the tests
BATCHCHAT = str(Path(sys.executable).parent / "batchchat")


def make_project(tmp_path: Path, rows: int = 4) -> Path:
    """``tmp_path`` with jobs/labeling.yaml and the first ``rows`` sample reviews."""
    (tmp_path / "jobs").mkdir(parents=True)
    shutil.copy(ROOT / "jobs" / "labeling.yaml", tmp_path / "jobs" / "labeling.yaml")
    samples = tmp_path / "data" / "samples"
    samples.mkdir(parents=True)
    lines = (ROOT / "data" / "samples" / "reviews.jsonl").read_text().splitlines(keepends=True)
    (samples / "reviews.jsonl").write_text("".join(lines[:rows]))
    return tmp_path


def derive_job(project: Path, name: str, replace: dict[str, str]) -> str:
    """A variant of jobs/labeling.yaml (text replaced) saved as jobs/<name>.yaml."""
    text = (project / "jobs" / "labeling.yaml").read_text()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    (project / "jobs" / f"{name}.yaml").write_text(text)
    return f"jobs/{name}.yaml"


def run_cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``batchchat ARGS`` as a scheduler runs it: a process in the project directory."""
    return subprocess.run(
        [BATCHCHAT, *args], cwd=project, capture_output=True, text=True, timeout=120, check=False
    )
