"""``batchchat cancel``: cancel the batches of a job in batch mode; keep what they answered."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from batchchat.cli._common import reports_errors
from batchchat.cli._docs import docs_epilog


@click.command(epilog=docs_epilog("cancel"))
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--no-wait",
    is_flag=True,
    help="Ask for the cancellations and exit (75 while batches are cancelling).",
)
@reports_errors
def cancel(directory: Path, no_wait: bool) -> None:
    """Cancel the batches of the job whose output directory is DIRECTORY.

    Every batch of the job still running is cancelled, and shards not yet sent are
    dropped. Then, unless --no-wait, it waits for the batches to end and collects
    what they had answered (those answers are paid for: they are kept). Lines they
    had not run are recorded as errors (batch_cancelled); running the job again
    sends them, in either mode. The endpoint and key variable are the job's own
    (DIRECTORY/job.yaml).

    \b
    Exit codes: 0 cancelled and collected · 2 not an output directory with batches
    · 75 batches still cancelling (--no-wait): run `batchchat run` or cancel again
    later to collect them.
    """
    from batchchat.batchops import cancel_job

    done = asyncio.run(cancel_job(directory, wait=not no_wait))
    cancelled = done.cancelled
    report = done.outcome.report
    click.echo(
        f"{directory}: cancelled {len(cancelled.cancelled)} batch(es)"
        + (f" ({', '.join(cancelled.cancelled[:5])})" if cancelled.cancelled else "")
        + f"; {cancelled.released} shard(s) not sent were dropped.",
        err=True,
    )
    if cancelled.cancelling:
        click.echo(
            f"{cancelled.cancelling} batch(es) are still cancelling: run the job (or this "
            "command) again later to collect what they answered.",
            err=True,
        )
        raise SystemExit(75)
    click.echo(f"Kept: {report.rows_ok:,} ok, {report.rows_error:,} failed rows.", err=True)
