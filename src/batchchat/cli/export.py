"""``batchchat export``: the results of an output directory as JSONL, Batch API lines or CSV."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from batchchat.cli._common import reports_errors
from batchchat.cli._docs import docs_epilog
from batchchat.results.export import FORMATS, export_results, export_to_file


@click.command(epilog=docs_epilog("export"))
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="jsonl",
    show_default=True,
    help="jsonl: one result per line · openai-batch: Batch API output lines keyed by "
    "custom_id · csv: nested columns as JSON text.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write (default: standard output).",
)
@reports_errors
def export(directory: Path, fmt: str, output: Path | None) -> None:
    """Export the results in DIRECTORY (one row per row_id and sample) to another format.

    \b
    Examples:
      batchchat export out/job --format csv -o results.csv
      batchchat export out/job --format openai-batch > batch_output.jsonl
    """
    if output is None:
        rows = export_results(directory, fmt, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    rows = export_to_file(directory, fmt, output)
    click.echo(f"exported {rows} row(s) from {directory} to {output} ({fmt})", err=True)
