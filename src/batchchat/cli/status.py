"""``batchchat status``: whether an output directory is done, partial, running, failed or
(batch mode) pending, and its batches."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import click
import orjson

from batchchat.cli._common import reports_errors
from batchchat.cli._docs import docs_epilog
from batchchat.results.status import RunStatus, read_status

if TYPE_CHECKING:
    from batchchat.batchapi.state import BatchState, Shard

_STOPPED = {
    "budget": "stopped at the budget",
    "interrupted": "was interrupted",
    "fatal": "stopped at an error every request would repeat",
    "error": "stopped at an error (a malformed input line, a full disk: see its output)",
    "pending": "left batches at the Batch API",
}


@click.command(epilog=docs_epilog("status"))
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object on standard output.")
@reports_errors
def status(directory: Path, as_json: bool) -> None:
    """Tell whether the output DIRECTORY is done, partial, running or failed.

    \b
    Exit codes (for sensors and shell scripts):
      0 done      the last run completed and every row is ok
      1 failed    the last run completed, some rows failed (re-run to retry them)
      2           DIRECTORY is not a batchchat output directory
      4 partial   the last run did not finish (interrupted, killed, budget, or stopped
                  early because every request failed the same way); re-run it
      5 running   a batchchat run is writing DIRECTORY now
      75 pending  batch mode: batches are at the Batch API and no run is waiting
                  for them; run the job again (later) to collect them
    """
    from batchchat.batchapi.state import read_state
    from batchchat.results.layout import OutputLayout

    state = read_status(directory)
    batches = read_state(OutputLayout(directory)) if state.path.is_dir() else None
    if batches is not None and batches.live() and state.state != "running":
        state = dataclasses.replace(state, state="pending")
    if as_json:
        data = state.to_dict()
        if batches is not None:
            data["batches"] = _batches_json(batches)
        click.echo(orjson.dumps(data, default=str).decode())
    else:
        click.echo(describe(state))
        if batches is not None:
            click.echo(describe_batches(batches))
    raise SystemExit(state.exit_code)


def describe(state: RunStatus) -> str:
    """One or two lines for people."""
    counts = f"{state.ok} ok, {state.failed} failed"
    if state.state == "running" and state.holder is not None:
        return f"{state.path}: running — {counts} so far ({state.holder.describe()})"
    if state.state == "partial":
        why = _STOPPED.get(state.stop_reason or "", "did not finish (killed or still starting)")
        if state.fatal_error:
            why = f"stopped early: {state.fatal_error}"
        return (
            f"{state.path}: partial — {counts}; the last run ({state.run_id}) {why}.\n"
            "Run the same job again to finish it: finished rows are skipped."
        )
    if state.state == "pending":
        return (
            f"{state.path}: pending — {counts} so far; batches are at the Batch API.\n"
            "Run the same job again (later) to collect them: cron or Airflow can do it "
            "(exit 75 means: run again later)."
        )
    if state.state == "failed":
        return (
            f"{state.path}: failed — {counts}.\n"
            "Run the same job again to retry the failed rows (--no-retry-failed keeps them)."
        )
    return f"{state.path}: done — {counts}"


def describe_batches(state: BatchState) -> str:
    """A line per shard that is not done, and a line of totals."""
    from batchchat.batchapi.state import summarize

    summary = summarize(state)
    lines = [
        f"batches: {summary['batches']} created, {summary['lines']:,} lines, "
        f"{summary['lines_resubmitted']:,} resubmitted, {summary['lines_pending']:,} pending"
    ]
    lines += [f"  {_shard_line(shard)}" for shard in state.live()]
    return "\n".join(lines)


def _shard_line(shard: Shard) -> str:
    counts = shard.counts or {}
    done = f"{counts.get('completed', 0):,}/{shard.lines:,} done"
    failed = f", {counts['failed']:,} failed" if counts.get("failed") else ""
    where = shard.batch_id or "(no batch yet)"
    status = shard.status or shard.phase
    round_ = f", resubmission {shard.round}" if shard.round else ""
    return f"{shard.id}  {where}  {status}  {done}{failed}{round_}"


def _batches_json(state: BatchState) -> dict[str, object]:
    from batchchat.batchapi.state import summarize

    shards = [
        {
            "shard": shard.id,
            "batch_id": shard.batch_id,
            "phase": shard.phase,
            "status": shard.status,
            "lines": shard.lines,
            "round": shard.round,
            "counts": shard.counts,
        }
        for shard in state.shards
    ]
    return {**summarize(state), "shards": shards}
