"""The generated reference pages: current, complete, and generated from what they claim.

Runs without the docs extra: the generator needs only click and pydantic.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import BaseModel, Field

from batchchat.cli.simulate import simulate
from batchchat.cli.simulate import spec_keys as simulator_keys
from batchchat.spec import JobSpec, SimulatorSpec
from tests.docs._markdown import DOCS, ROOT


def generator() -> ModuleType:
    path = DOCS / "_gen" / "reference.py"
    spec = importlib.util.spec_from_file_location("docs_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def spec_keys() -> list[str]:
    """Every dotted key of a job spec, as the reference names them."""
    reference = generator()
    return [
        f"{path}.{name}" if path else name
        for path, model in reference.spec_sections(JobSpec)
        for name in model.model_fields
    ]


def test_the_checked_in_pages_are_what_the_code_says_now() -> None:
    stale = generator().stale_pages()
    assert not stale, f"stale: {stale}; regenerate with: python docs/_gen/reference.py"


def test_the_check_command_fails_on_a_stale_page(tmp_path: Path) -> None:
    reference = generator()
    for page in reference.PAGES:
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / page).write_text("old\n")
    assert reference.stale_pages(tmp_path) == list(reference.PAGES)
    assert reference.write_pages(tmp_path) == list(reference.PAGES)
    assert reference.stale_pages(tmp_path) == []
    done = subprocess.run(
        [sys.executable, str(DOCS / "_gen" / "reference.py"), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_every_spec_key_is_in_the_reference_with_its_meaning() -> None:
    page = (DOCS / "reference" / "spec.md").read_text()
    keys = spec_keys()
    assert {"input.path", "limits.max_concurrency", "endpoint.simulator.faults.http_500"} <= set(
        keys
    )
    for key in keys:
        assert f"| `{key}` |" in page, key


def test_a_spec_field_without_a_comment_stops_the_generator() -> None:
    class Undocumented(BaseModel):
        #: documented
        fine: int = 1
        silent: int = Field(default=2, gt=0)

    with pytest.raises(ValueError, match=r"Undocumented\.silent .* has no #: comment"):
        generator().spec_table("demo", Undocumented)


def test_a_default_said_in_words_wins_over_the_declared_one() -> None:
    rows = generator().spec_table("output", JobSpec.model_fields["output"].annotation)
    path_row = next(row for row in rows if row.startswith("| `output.path` |"))
    assert "| `out/<name>` |" in path_row


def test_every_simulate_flag_names_a_real_simulator_key() -> None:
    params = {param.name for param in simulate.params}
    for flag, key in simulator_keys().items():
        assert flag in params, flag
        model: type[BaseModel] = SimulatorSpec
        *sections, leaf = key.split(".")
        for section in sections:
            nested = model.model_fields[section].annotation
            assert isinstance(nested, type) and issubclass(nested, BaseModel)
            model = nested
        assert leaf in model.model_fields, key


def test_the_cli_reference_has_every_command_and_option() -> None:
    from batchchat.cli import COMMANDS

    page = (DOCS / "reference" / "cli.md").read_text()
    for name in COMMANDS:
        assert f"## `batchchat {name}` {{#batchchat-{name}}}" in page
    assert "| `--dry-run` |" in page and "--no-retry-failed" in page
