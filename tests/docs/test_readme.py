"""The README sells and starts in a few screens, and says nothing the rest of the repo
contradicts: the set-up commands CI runs, the benchmark figures, the exit codes, its links."""

from __future__ import annotations

import re

from batchchat.models import ExitCode
from tests.docs._markdown import DOCS, ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
INSTALL_AND_RUN = "pip install -e . && batchchat run jobs/quickstart.yaml"
TEST_COMMAND = "pip install -e '.[test]' && pytest"


def section(name: str, text: str = README) -> str:
    """The text between ``--8<-- [start:name]`` and ``[end:name]`` markers."""
    found = re.search(rf"\[start:{name}\][^\n]*\n(.*?)\n[^\n]*\[end:{name}\]", text, re.S)
    assert found is not None, f"no section {name!r}"
    return found.group(1)


def test_the_readme_fits_on_a_few_screens() -> None:
    assert len(README.splitlines()) <= 250


def test_the_two_set_up_commands_are_there_as_blocks_of_their_own() -> None:
    for command in (INSTALL_AND_RUN, TEST_COMMAND):
        assert f"```bash\n{command}\n```" in README


def test_ci_runs_the_readmes_test_command_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert TEST_COMMAND in ci


def test_every_figure_at_a_glance_is_one_of_the_benchmark_results() -> None:
    glance = section("glance")
    results = (ROOT / "bench" / "RESULTS.md").read_text(encoding="utf-8")
    figures = re.findall(r"\d+(?:,\d{3})*(?:\.\d+)?", glance.split("| what |", 1)[1])
    assert len(figures) >= 15
    missing = [figure for figure in figures if figure not in results]
    assert not missing, f"figures in the README that bench/RESULTS.md does not have: {missing}"


def test_the_exit_codes_are_the_ones_batchchat_uses() -> None:
    table = section("exit-codes")
    codes = {int(code) for code in re.findall(r"^\| (\d+) \|", table, re.M)}
    assert codes == {int(code) for code in ExitCode}


def test_every_relative_link_leads_to_a_file() -> None:
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", README)
    assert len(links) >= 25
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, missing


def test_every_readme_section_the_site_includes_exists() -> None:
    included = set()
    for page in DOCS.rglob("*.md"):
        included |= set(re.findall(r'--8<-- "README\.md:([a-z-]+)"', page.read_text()))
    assert included == {"intro", "glance", "quickstart", "exit-codes"}
    for name in included:
        assert section(name).strip()
