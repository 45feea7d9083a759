"""The ``batchchat`` command line: thin; it parses arguments and calls the Python API.

Each command lives in its own module and is imported only when invoked, so
``batchchat --help`` is instant and one command's imports never slow another.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import click

from batchchat._version import __version__
from batchchat.cli._docs import docs_epilog

#: command name → "module:attribute" under batchchat.cli
COMMANDS = {
    "run": "run:run",
    "validate": "validate:validate",
    "plan": "plan:plan",
    "simulate": "simulate:simulate",
    "report": "report:report",
    "export": "export:export",
    "status": "status:status",
    "cancel": "cancel:cancel",
    "import": "importing:import_command",
    "cache": "cache:cache",
}


class LazyGroup(click.Group):
    """A group that imports a command's module only when that command is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name, target in COMMANDS.items() if _exists(target))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        module = importlib.import_module(f"batchchat.cli.{module_name}")
        command: Any = getattr(module, attribute)
        assert isinstance(command, click.Command)
        return command


def _exists(target: str) -> bool:
    return importlib.util.find_spec(f"batchchat.cli.{target.split(':')[0]}") is not None


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=docs_epilog(),
)
@click.version_option(__version__, prog_name="batchchat")
def main() -> None:
    """Send a dataset through an OpenAI-compatible Chat Completions endpoint.

    \b
    Quick start (no key, no network; the built-in simulator answers):
      batchchat run jobs/quickstart.yaml
    """
