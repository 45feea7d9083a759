"""What every command shares: turning batchchat errors into a message and an exit code."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import click

from batchchat.errors import BatchchatError, SpecError

if TYPE_CHECKING:
    from rich.table import Table

    from batchchat.job import CompiledJob
    from batchchat.spec import JobSpec

P = ParamSpec("P")
R = TypeVar("R")


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Print a BatchchatError as one paragraph on stderr and exit with its code."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except BatchchatError as exc:
            click.echo(f"Error: {exc}", err=True)
            raise SystemExit(exc.exit_code) from None

    return wrapper


def parse_vars(pairs: tuple[str, ...]) -> dict[str, str]:
    """``--var key=value`` pairs as a dict; a pair without '=' is a usage error."""
    variables: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected key=value, got {pair!r}", param_hint="--var")
        variables[key] = value
    return variables


job_argument = click.argument(
    "job", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="JOB.yaml"
)
var_option = click.option(
    "--var",
    "variables",
    multiple=True,
    metavar="KEY=VALUE",
    help="Set vars.KEY for templates and output.path (repeatable; overrides the spec's vars).",
)


def compiled_or_problems(job: Path, spec: JobSpec, *, read_every_line: bool = False) -> CompiledJob:
    """The compiled job, or every problem at once, said with the job file's name."""
    from batchchat.job import compile_job  # the engine loads only for the commands that need it

    try:
        return compile_job(spec, require_key=False, read_every_line=read_every_line)
    except BatchchatError as exc:
        problems = exc.problems if isinstance(exc, SpecError) and exc.problems else None
        problems = problems or ["  " + str(exc).replace("\n", "\n  ")]
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        raise SpecError(f"{job}: the job is not ready to run ({count}):", problems) from None


def grid(rows: Iterable[tuple[str, str]]) -> Table:
    """Label/value lines aligned in two columns."""
    from rich.table import Table
    from rich.text import Text

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for label, value in rows:
        table.add_row(label, Text(value))  # Text: file names and columns are not markup
    return table


def shown_path(path: Path) -> str:
    """A path as short as it can be said: relative to the working directory when inside it."""
    resolved = Path(os.path.normpath(path.absolute()))
    try:
        return str(resolved.relative_to(Path.cwd()))
    except ValueError:
        return str(resolved)
