"""``--help`` says where the documentation is: the site, and each command's own page."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from batchchat.cli import COMMANDS, main
from batchchat.cli._docs import DOCS_URL, command_page, docs_url


def test_the_main_help_links_to_the_site() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert f"Documentation: {DOCS_URL}" in result.output


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_links_to_its_page(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0
    # click may wrap the line before the address; the address itself is never broken
    assert docs_url(command_page(command)) in result.output.split()


def test_the_address_is_a_site_root() -> None:
    assert DOCS_URL.startswith("https://") and DOCS_URL.endswith("/")
    assert docs_url("reference/cli/") == DOCS_URL + "reference/cli/"
