"""``batchchat import``: results made elsewhere (Batch API files, vLLM run-batch) → a job."""

from __future__ import annotations

from pathlib import Path

import click

from batchchat.cli._common import job_argument, parse_vars, reports_errors, var_option
from batchchat.cli._docs import docs_epilog


@click.command(name="import", epilog=docs_epilog("import"))
@job_argument
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--output", "-o", type=click.Path(file_okay=False), help="Output directory (overrides spec)."
)
@click.option(
    "--batch-id",
    help="The batch id to record on every imported row (default: import:<file name>).",
)
@var_option
@reports_errors
def import_command(
    job: Path,
    files: tuple[Path, ...],
    output: str | None,
    batch_id: str | None,
    variables: tuple[str, ...],
) -> None:
    """Import result FILES of JOB's requests, made elsewhere, into its output directory.

    FILES are Batch API output or error files (OpenAI, Azure, DashScope; downloaded by
    hand) or `vllm run-batch -o` output, made from the lines `batchchat plan JOB --out`
    writes. Each line is joined to its input row by custom_id and written as a typed
    result, priced at batch prices; rows an earlier run answered ok are left as they are.
    A line naming a custom_id the job does not have stops the import before anything is
    written.

    \b
    Example:
      batchchat plan jobs/reviews.yaml --out requests.jsonl
      vllm run-batch -i requests.jsonl -o results.jsonl --model Qwen/Qwen2.5-7B-Instruct
      batchchat import jobs/reviews.yaml results.jsonl

    \b
    Exit codes: 0 every row ok · 1 some imported rows are errors · 2 a spec, input or
    file problem (nothing imported).
    """
    from batchchat.api import resolve_spec
    from batchchat.batchops import import_results

    overrides = {"output": output} if output is not None else {}
    spec = resolve_spec(job, overrides, parse_vars(variables))
    done = import_results(spec, list(files), batch_id=batch_id)
    count, report = done.count, done.outcome.report
    click.echo(
        f"imported {count.ok + count.failed:,} line(s) from {len(files)} file(s) into "
        f"{spec.output_dir}: {count.ok:,} ok, {count.failed:,} failed"
        + (f", {count.kept:,} already answered (kept)" if count.kept else "")
        + (f", {count.unreadable:,} unreadable line(s) skipped" if count.unreadable else ""),
        err=True,
    )
    click.echo(
        f"The job now has {report.rows_ok:,} ok and {report.rows_error:,} failed rows.", err=True
    )
    raise SystemExit(1 if report.rows_error else 0)
