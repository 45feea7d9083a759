"""``batchchat run``: run a job; the exit code says how it ended (listed in its --help)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import orjson

from batchchat.cli._common import parse_vars, reports_errors
from batchchat.cli._docs import docs_epilog
from batchchat.errors import BatchchatError


@click.command(epilog=docs_epilog("run"))
@click.argument("job", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    metavar="N",
    help="Only the first N input rows (sets input.limit).",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Output directory (overrides output.path).",
)
@click.option(
    "--new-output",
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Write to this directory, which must not hold results yet.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    metavar="N",
    help="Requests in flight at once (overrides limits.max_concurrency).",
)
@click.option(
    "--rpm",
    type=click.IntRange(min=1),
    metavar="N",
    help="Requests per minute (overrides limits.rpm).",
)
@click.option(
    "--tpm",
    type=click.IntRange(min=1),
    metavar="N",
    help="Tokens per minute (overrides limits.tpm).",
)
@click.option(
    "--var",
    "variables",
    multiple=True,
    metavar="KEY=VALUE",
    help="Set vars.KEY for templates and paths (repeatable; overrides the spec's vars).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Send everything to the built-in simulator instead (no key, no cost), into "
    "<output>-dry-run unless -o says otherwise; a real run never resumes a rehearsal's answers.",
)
@click.option(
    "--retry-failed/--no-retry-failed",
    default=True,
    show_default=True,
    help="On a re-run, send the rows that failed before again.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Start over in place; the old results are moved to superseded/, never deleted.",
)
@click.option(
    "--no-wait",
    is_flag=True,
    help="Batch mode: submit, collect what has ended, and exit (75 while batches run).",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Where to run: here, or on Ray Data (pip install 'batchchat[ray]'): the same "
    "job and output, one rate limit for every worker.",
)
@click.option(
    "--ray-address",
    metavar="ADDR",
    help="With --engine ray: the cluster to join (default: $RAY_ADDRESS, else a Ray "
    "started on this machine for the run).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    metavar="N",
    help="With --engine ray: how many workers send (default: one per CPU of the cluster).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress and no summary, only errors.")
@click.option("--log-json", is_flag=True, help="One JSON event per line on stdout, nothing else.")
@reports_errors
def run(
    job: Path,
    limit: int | None,
    output: str | None,
    new_output: str | None,
    concurrency: int | None,
    rpm: int | None,
    tpm: int | None,
    variables: tuple[str, ...],
    dry_run: bool,
    retry_failed: bool,
    force: bool,
    no_wait: bool,
    engine: str,
    ray_address: str | None,
    workers: int | None,
    quiet: bool,
    log_json: bool,
) -> None:
    """Run JOB (a YAML job spec): send every row, write typed Parquet results and a report.

    \b
    Exit codes: 0 all rows ok · 1 finished with failed rows · 2 spec, input or
    usage error (nothing sent) · 3 stopped by the budget · 75 batch mode: batches
    still running, run again later · 130 interrupted.
    Re-running the same job resumes: finished rows are skipped; in batch mode it
    collects what the batches answered and resubmits what failed.
    """
    # pyarrow's default allocator (mimalloc) holds ~30 MB more through a run than the
    # system one, at no CPU cost we could measure; read when pyarrow first allocates, so
    # set before the API loads it (a user's own choice stands)
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    from batchchat.api import ray_options, rehearsal_spec, resolve_spec
    from batchchat.cli._running import execute_run

    overrides = {
        "limit": limit,
        "output": new_output or output,
        "concurrency": concurrency,
        "rpm": rpm,
        "tpm": tpm,
    }
    with _said_in_json(log_json):
        given = {k: v for k, v in overrides.items() if v is not None}
        cluster = ray_options(engine, ray_address, workers)
        spec = resolve_spec(job, given, parse_vars(variables))
        if dry_run and new_output is None and output is None:
            spec = rehearsal_spec(spec)
        if new_output is not None:
            _require_fresh(Path(spec.output_dir))
        mode = (
            "json" if log_json else "quiet" if quiet else "live" if sys.stderr.isatty() else "plain"
        )
        code = asyncio.run(
            execute_run(
                spec,
                mode=mode,
                retry_failed=retry_failed,
                force=force,
                dry_run=dry_run,
                wait=not no_wait,
                cluster=cluster,
            )
        )
    raise SystemExit(code)


def _require_fresh(path: Path) -> None:
    from batchchat.errors import ResumeError
    from batchchat.results.layout import OutputLayout

    if OutputLayout(path).parts():
        raise ResumeError(f"--new-output {path} already holds results; choose another directory")


@contextlib.contextmanager
def _said_in_json(log_json: bool) -> Iterator[None]:
    """With --log-json, an error that ends the command is a last JSON event too: a machine
    reading the events always learns how the run ended, also when it never started."""
    try:
        yield
    except BatchchatError as exc:
        if log_json:
            event = {"event": "error", "message": str(exc), "exit_code": int(exc.exit_code)}
            click.echo(orjson.dumps(event).decode())
        raise
