"""``batchchat status``: whether an output directory is done, partial, running or failed."""

from __future__ import annotations

from pathlib import Path

import click
import orjson

from batchchat.cli._common import reports_errors
from batchchat.cli._docs import docs_epilog
from batchchat.results.status import RunStatus, read_status

_STOPPED = {
    "budget": "stopped at the budget",
    "interrupted": "was interrupted",
    "fatal": "stopped at an error every request would repeat",
    "error": "stopped at an error (a malformed input line, a full disk: see its output)",
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
    """
    state = read_status(directory)
    if as_json:
        click.echo(orjson.dumps(state.to_dict(), default=str).decode())
    else:
        click.echo(describe(state))
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
    if state.state == "failed":
        return (
            f"{state.path}: failed — {counts}.\n"
            "Run the same job again to retry the failed rows (--no-retry-failed keeps them)."
        )
    return f"{state.path}: done — {counts}"
