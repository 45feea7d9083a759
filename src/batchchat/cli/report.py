"""``batchchat report DIR``: the report of an output directory, at any time (also mid-run)."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from batchchat.cli._common import reports_errors
from batchchat.cli._docs import docs_epilog
from batchchat.errors import InputError

if TYPE_CHECKING:
    from batchchat.report.build import RunReport

FORMATS = ("table", "json", "md", "html")


@click.command(epilog=docs_epilog("report"))
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="table: the summary for a terminal; json: report.json; md: report.md; html: report.html.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write to this file instead of standard output.",
)
@click.option(
    "--write",
    is_flag=True,
    help="Also (re)write report.json, report.md and report.html in DIRECTORY.",
)
@reports_errors
def report(directory: Path, fmt: str, output: Path | None, write: bool) -> None:
    """Show the report of the run(s) in DIRECTORY, an output directory of `batchchat run`.

    Works for finished, partial and interrupted runs: it is rebuilt from the results and
    run stats on disk. Costs are the ones recorded with each result.

    \b
    Examples:
      batchchat report out/labels
      batchchat report out/labels --format json | jq .cost.total_usd
      batchchat report out/labels --format html -o /tmp/labels.html
    """
    from batchchat.report.build import build_report, write_reports
    from batchchat.report.text import render_table

    _check_output_dir(directory)
    built = build_report(directory)
    if write:
        write_reports(directory, built)
    if fmt == "table" and output is None:
        from rich.console import Console

        Console(file=sys.stdout).print(render_table(built))
        return
    text = _render(fmt, built)
    if output is not None:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=not text.endswith("\n"))


def _render(fmt: str, built: RunReport) -> str:
    from batchchat.report.text import render_markdown, render_table

    if fmt == "json":
        return built.to_json().decode("utf-8") + "\n"
    if fmt == "md":
        return render_markdown(built)
    if fmt == "html":
        from batchchat.report.html import render_html

        return render_html(built)
    from rich.console import Console

    console = Console(record=True, width=100, file=io.StringIO())
    console.print(render_table(built))
    return console.export_text()


def _check_output_dir(directory: Path) -> None:
    from batchchat.results.layout import OutputLayout

    if not OutputLayout(directory).is_output_dir():
        raise InputError(
            f"{directory} is not a batchchat output directory (no results/, runs/ or "
            "manifest.json in it); pass the output.path of a job, e.g. out/<job name>"
        )
