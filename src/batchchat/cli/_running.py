"""The part of ``batchchat run`` that lives inside the event loop: signals, progress, summary."""

from __future__ import annotations

import asyncio
import signal
import sys

import click
from rich.console import Console

from batchchat.api import start_run
from batchchat.cli.progress import ProgressDisplay
from batchchat.cluster import RayOptions
from batchchat.models import ExecutionStats, ExitCode, StopReason, new_run_id
from batchchat.runner import RunOptions, RunOutcome
from batchchat.spec import JobSpec


async def execute_run(
    spec: JobSpec,
    *,
    mode: str,
    retry_failed: bool,
    force: bool,
    dry_run: bool,
    wait: bool = True,
    cluster: RayOptions | None = None,
) -> int:
    """Run the job with signal handling and a progress display; return the exit code."""
    stop = asyncio.Event()
    run_id = new_run_id()
    display = ProgressDisplay(mode, fields={"run_id": run_id, "job": spec.name})
    options = RunOptions(
        run_id=run_id,
        retry_failed=retry_failed,
        force=force,
        dry_run=dry_run,
        wait=wait,
        on_progress=display.update,
        on_warning=display.warn,
    )
    task = asyncio.current_task()
    assert task is not None
    _install_signal_handlers(stop, task, quiet=mode in {"json", "quiet"})
    try:
        with display:
            display.event("started", output=str(spec.output_dir), dry_run=dry_run)
            outcome = await start_run(spec, options, cluster, stop=stop)
            display.update(outcome.stats, final=True)
    except asyncio.CancelledError:
        click.echo("batchchat: stopped at once; finished results are saved.", err=True)
        return ExitCode.INTERRUPTED
    finally:
        _remove_signal_handlers()
    _summarize(outcome, mode, display)
    return outcome.exit_code


def _say_batches_pending(console: Console, outcome: RunOutcome) -> None:
    """Batch mode: what is still at the Batch API, and what to run next."""
    batches = outcome.report.batches
    if not batches or not batches["lines_pending"]:
        return
    out = outcome.output_dir
    console.print(
        f"[yellow]{batches['lines_pending']:,} lines are still at the Batch API[/]: run the "
        f"job again to collect them (`batchchat status {out}` shows the batches; "
        f"`batchchat cancel {out}` cancels them)."
    )


def _install_signal_handlers(stop: asyncio.Event, task: asyncio.Task[int], *, quiet: bool) -> None:
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if not stop.is_set():
            stop.set()
            if not quiet:
                click.echo(
                    f"\nbatchchat: {signal.Signals(signum).name}: finishing requests in flight "
                    "(signal again to stop at once)…",
                    err=True,
                )
        else:
            task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)


def _remove_signal_handlers() -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(signum)


def _budget_stop(stats: ExecutionStats) -> str:
    """What a budget stop means: the budget is per run, so a re-run spends it again."""
    spent = f"this run spent ${stats.cost_usd:,.4f}, up to budget.max_cost_usd"
    done = stats.skipped + stats.results_ok + stats.results_error
    left = f"the {stats.planned - done:,} requests left" if stats.planned else "what is left"
    return (
        f"{spent}. The budget counts per run: a re-run sends {left} with a fresh budget of "
        "the same size (lower budget.max_cost_usd first to spend less)."
    )


def _summarize(outcome: RunOutcome, mode: str, display: ProgressDisplay) -> None:
    from batchchat.report.text import render_table

    report = outcome.report
    if mode == "json":
        display.event(
            "report",
            exit_code=outcome.exit_code,
            stop_reason=outcome.stats.stop_reason,
            report=report.to_dict(),
        )
        return
    if mode == "quiet":
        if outcome.fatal_error:
            click.echo(f"Error: {outcome.fatal_error}", err=True)
        return
    console = Console(file=sys.stderr)
    console.print(render_table(report))
    for issue in outcome.issues[:5]:
        console.print(f"[yellow]skipped input[/] {issue.path}:{issue.line}: {issue.message}")
    if outcome.stats.skipped and not outcome.stats.requests_sent:
        console.print(f"Nothing to send: all {outcome.stats.skipped:,} requests were already done.")
    if outcome.fatal_error:
        console.print(f"[red]Stopped early:[/] {outcome.fatal_error}")
    if outcome.stats.stop_reason == StopReason.BUDGET:
        console.print(f"[red]Stopped by the budget:[/] {_budget_stop(outcome.stats)}")
    _say_batches_pending(console, outcome)
    console.print(f"Results: {outcome.output_dir}/results/  report: {outcome.output_dir}/report.md")
