"""``batchchat plan``: render a job's requests without sending anything, and count them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import click
from rich.console import Console
from rich.text import Text

from batchchat.cli._common import (
    compiled_or_problems,
    grid,
    job_argument,
    parse_vars,
    reports_errors,
    shown_path,
    var_option,
)
from batchchat.cli._docs import docs_epilog
from batchchat.cli._pool import pool_rows
from batchchat.models import ChatRequest
from batchchat.planning.estimate import PlanEstimate, estimate
from batchchat.pricing import tier_of
from batchchat.results.layout import write_atomically
from batchchat.spec import JobSpec, load_spec

#: strings longer than this are shortened when bodies are shown (data: URLs, long documents)
_SHOWN_CHARS = 300


@click.command(epilog=docs_epilog("plan"))
@job_argument
@click.option(
    "--show", default=3, show_default=True, metavar="N", help="How many request bodies to print."
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write every request as an OpenAI Batch API input line (JSONL; vLLM run_batch too).",
)
@click.option(
    "--limit", type=click.IntRange(min=1), metavar="N", help="Plan only the first N rows."
)
@var_option
@reports_errors
def plan(
    job: Path, show: int, out: Path | None, limit: int | None, variables: tuple[str, ...]
) -> None:
    """Render a job's requests without sending anything.

    Prints the first bodies, the row and request counts, the estimated prompt
    tokens, the most output tokens the requests allow, and the estimated cost.
    """
    spec = load_spec(job, overrides={"input.limit": limit}, variables=parse_vars(variables))
    compiled = compiled_or_problems(job, spec)
    console = Console(highlight=False)
    shown = 0

    def show_first(request: ChatRequest) -> None:
        nonlocal shown
        if shown < show:
            _print_request(console, request)
            shown += 1

    tier = tier_of(spec.request, batch=spec.mode == "batch")

    def count(handle: BinaryIO | None = None) -> PlanEstimate:
        return estimate(
            compiled.plan, compiled.prices, on_request=show_first, batch_file=handle, tier=tier
        )

    if out is None:
        totals = count()
    else:
        found: list[PlanEstimate] = []
        write_atomically(out, lambda handle: found.append(count(handle)))
        totals = found[0]
    console.print(grid(_totals_rows(spec, totals, out)))


def _print_request(console: Console, request: ChatRequest) -> None:
    console.print(
        Text(request.custom_id, style="bold").append(
            f"  ~{request.est_prompt_tokens} prompt tokens, "
            f"≤ {request.max_output_tokens} output tokens",
            style="",
        )
    )
    console.print_json(data=_shortened(request.body))


def _shortened(value: Any) -> Any:
    """The body for display: long strings (data: URLs, documents) cut, marked with their size."""
    if isinstance(value, str) and len(value) > _SHOWN_CHARS:
        return f"{value[:_SHOWN_CHARS]}… ({len(value):,} chars)"
    if isinstance(value, dict):
        return {k: _shortened(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shortened(v) for v in value]
    return value


def _totals_rows(
    spec: JobSpec, totals: PlanEstimate, out: Path | None
) -> Iterator[tuple[str, str]]:
    if spec.endpoints is not None:
        names = ", ".join(member.name for member in spec.endpoints)
        yield "job", f"{spec.name}: {spec.request.get('model')} via a pool ({names})"
        yield from pool_rows(spec)
    else:
        where = "the built-in simulator" if spec.endpoint.is_simulator else spec.endpoint.base_url
        yield "job", f"{spec.name}: {spec.request.get('model')} via {where}"
    yield "rows", f"{totals.rows:,}"
    yield "requests", f"{totals.requests:,}  ({spec.samples} per row)"
    yield "prompt tokens", f"~{totals.prompt_tokens:,} (offline estimate)"
    yield "output tokens", f"≤ {totals.max_output_tokens:,} (the requests' limits)"
    yield "cost", _describe_cost(totals)
    if spec.mode == "batch":
        settings = spec.batch
        batches = -(-totals.requests // settings.lines_per_batch)
        yield (
            "batch mode",
            f"~{batches:,} batch(es) of ≤ {settings.lines_per_batch:,} lines, answered within "
            f"{settings.completion_window}",
        )
    if totals.issues:
        first = totals.issues[0]
        where = f"{first.path}:{first.line}" if first.line else first.path
        yield "skipped", f"{len(totals.issues)} bad input lines (first: {where})"
    if totals.failures:
        count = len(totals.failures)
        yield (
            "not planned",
            f"{count:,} request{'s' if count > 1 else ''} a template fails on (a run records "
            f"them as error rows); first: {totals.failures[0].error}",
        )
    if out is not None:
        yield "written", f"{shown_path(out)} ({totals.requests:,} Batch API lines)"


def _describe_cost(totals: PlanEstimate) -> str:
    if totals.requests == 0:
        return "$0 (no requests)"
    parts = []
    if totals.cost_high_usd > 0 or not totals.unpriced_models:
        parts.append(f"{_usd(totals.cost_low_usd)} – {_usd(totals.cost_high_usd)}")
    if totals.tier != "standard" and totals.cost_high_usd > 0 < totals.online_cost_high_usd:
        online = f"{_usd(totals.online_cost_low_usd)} – {_usd(totals.online_cost_high_usd)}"
        saving = totals.online_cost_high_usd - totals.cost_high_usd
        where = "Batch API" if totals.tier == "batch" else "flex"
        parts[-1] += f" at {where} prices (online: {online}; up to {_usd(saving)} saved)"
    if totals.unpriced_models:
        names = ", ".join(sorted(totals.unpriced_models))
        parts.append(f"unpriced model(s): {names} (add them under pricing:)")
    return "; ".join(parts)


def _usd(amount: float) -> str:
    if amount == 0:
        return "$0"
    return (
        f"${amount:,.2f}"
        if amount >= 1
        else f"${amount:.4f}"
        if amount >= 0.01
        else f"${amount:.6f}"
    )
