"""``batchchat validate`` and ``batchchat plan``: check a job and render it without sending."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from batchchat.cli._common import parse_vars, reports_errors
from batchchat.errors import BatchchatError, SpecError
from batchchat.models import ChatRequest
from batchchat.plan.planner import (
    RowFailure,
    batch_line,
    check_spec_against_input,
    compile_request,
    iter_requests,
)
from batchchat.plan.reader import (
    InputIssue,
    check_unique_ids,
    count_rows,
    input_files,
    input_format,
    read_schema,
)
from batchchat.pricing import PriceTable
from batchchat.spec import JobSpec, SeedSpec, load_spec

#: strings longer than this are shortened when bodies are shown (data: URLs, long documents)
_SHOWN_CHARS = 300

_job_argument = click.argument(
    "job", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="JOB.yaml"
)
_var_option = click.option(
    "--var",
    "variables",
    multiple=True,
    metavar="KEY=VALUE",
    help="Set vars.KEY for templates and output.path (repeatable; overrides the spec's vars).",
)


@click.command()
@_job_argument
@_var_option
@reports_errors
def validate(job: Path, variables: tuple[str, ...]) -> None:
    """Check a job spec and its input; print a one-screen summary.

    Checks that every column a template uses exists, the types of request fields
    (rendering the first rows), output.keep_columns, and that ids are unique.
    Exit status: 0 when the job is ready to run, 2 with every problem listed.
    """
    spec = load_spec(job, variables=parse_vars(variables))
    problems: list[str] = []
    try:
        check_spec_against_input(spec)
    except SpecError as exc:
        problems.extend(exc.problems)
    try:
        check_unique_ids(spec)
    except BatchchatError as exc:
        problems.extend(f"  {line}" for line in str(exc).splitlines())
    problems.extend(_output_problems(spec))
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        raise SpecError(f"{job}: the job is not ready to run ({count}):", problems)
    console = Console(highlight=False)
    console.print(_grid(_summary_rows(spec, job)))
    console.print(
        f"[green]OK[/green]  {job} is ready to run; see its requests with: batchchat plan {job}"
    )


def _output_problems(spec: JobSpec) -> list[str]:
    """Labels that cannot be told apart, kept columns that clash with result columns, prices."""
    from batchchat.labels.labelset import LabelSet
    from batchchat.results.schema import result_schema
    from batchchat.runner import output_schema  # the executor's imports: only when validating

    schema = read_schema(spec)
    # kept columns missing from the input are reported by check_spec_against_input already
    kept = [name for name in spec.output.keep_columns if name in schema]
    spec = spec.model_copy(update={"output": spec.output.model_copy(update={"keep_columns": kept})})
    problems: list[str] = []

    def passes(check: Callable[[], object]) -> bool:
        try:
            check()
        except BatchchatError as exc:
            problems.extend(f"  {line}" for line in str(exc).splitlines())
            return False
        return True

    if passes(lambda: LabelSet.from_spec(spec)):
        passes(lambda: output_schema(spec, schema))  # kept columns against label columns too
    else:
        passes(lambda: result_schema(spec, schema))  # kept columns, without the labels
    passes(lambda: PriceTable.from_spec(spec))
    return problems


@click.command()
@_job_argument
@click.option("--show", default=3, show_default=True, help="How many request bodies to print.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write every request as an OpenAI Batch API input line (JSONL; vLLM run_batch too).",
)
@click.option("--limit", type=click.IntRange(min=1), help="Plan only the first N rows.")
@_var_option
@reports_errors
def plan(
    job: Path, show: int, out: Path | None, limit: int | None, variables: tuple[str, ...]
) -> None:
    """Render a job's requests without sending anything.

    Prints the first bodies, the row and request counts, the estimated prompt
    tokens, the most output tokens the requests allow, and the estimated cost.
    """
    spec = load_spec(job, overrides={"input.limit": limit}, variables=parse_vars(variables))
    check_spec_against_input(spec)
    console = Console(highlight=False)
    totals = _PlanTotals.for_spec(spec)
    requests = iter_requests(spec, on_issue=totals.issues.append, on_failure=totals.failures.append)
    if out is not None:
        requests = _written(requests, out)
    for request in requests:
        if totals.requests < show:
            _print_request(console, request)
        totals.add(request)
    console.print(_grid(_totals_rows(spec, totals, out)))


# -- validate's summary ---------------------------------------------------------------------------


def _grid(rows: Iterable[tuple[str, str]]) -> Table:
    """Label/value lines aligned in two columns."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for label, value in rows:
        table.add_row(label, Text(value))  # Text: file names and columns are not markup
    return table


def _summary_rows(spec: JobSpec, job: Path) -> Iterator[tuple[str, str]]:
    files = input_files(spec)
    schema = read_schema(spec)
    where = _shown(files[0]) if len(files) == 1 else f"{spec.input.path} ({len(files)} files)"
    limit = f" (limit {spec.input.limit})" if spec.input.limit else ""
    yield "job", f"{spec.name}  ({job})"
    yield "input", f"{where}  [{input_format(spec, files[0])}]"
    yield "rows", f"{count_rows(spec):,}{limit}"
    yield "columns", ", ".join(f"{name} ({_type_name(dtype)})" for name, dtype in schema.items())
    id_column = spec.input.id_column
    yield "row id", f"column '{id_column}' (unique)" if id_column else "row position (0, 1, …)"
    yield "endpoint", _describe_endpoint(spec)
    yield "model", str(spec.request.get("model"))
    for ref in compile_request(spec).refs:
        used = sorted(ref.columns) + [f"vars.{v}" for v in sorted(ref.var_names)]
        yield "template", f"{ref.location} ← {', '.join(used) or '(no columns)'}"
    yield "samples", _describe_samples(spec)
    yield "limits", _describe_limits(spec)
    keep = ", ".join(spec.output.keep_columns) or "(none)"
    yield "output", f"{_shown(spec.output_dir)}  (keeps: {keep})"
    if spec.budget is not None:
        yield "budget", f"${spec.budget.max_cost_usd:,.2f}"


def _type_name(dtype: Any) -> str:
    """``str``, ``i64``, ``datetime[ms]``: the short names polars prints in frame headers."""
    short = getattr(dtype, "_string_repr", None)
    return str(short()) if callable(short) else str(dtype)


def _shown(path: Path) -> str:
    """A path as short as it can be said: relative to the working directory when inside it."""
    resolved = Path(os.path.normpath(path.absolute()))
    try:
        return str(resolved.relative_to(Path.cwd()))
    except ValueError:
        return str(resolved)


def _describe_endpoint(spec: JobSpec) -> str:
    endpoint = spec.endpoint
    if endpoint.is_simulator:
        text = "built-in simulator (local, no key, no cost)"
    else:
        text = endpoint.base_url
    if endpoint.api_key_env:
        present = "set" if os.environ.get(endpoint.api_key_env) else "NOT set: export it before run"
        text += f"; key from ${endpoint.api_key_env} ({present})"
    elif not endpoint.is_simulator:
        text += "; no api_key_env: requests are sent without a key"
    if endpoint.headers:
        text += f"; extra headers: {', '.join(sorted(endpoint.headers))}"
    return f"{text}; timeout {endpoint.timeout_s:g}s"


def _endpoint_name(spec: JobSpec) -> str:
    return "the built-in simulator" if spec.endpoint.is_simulator else spec.endpoint.base_url


def _describe_samples(spec: JobSpec) -> str:
    seed = spec.seed
    if isinstance(seed, SeedSpec) and seed.per_row:
        seeded = f"seed per row and sample, from base {seed.base}"
    elif isinstance(seed, SeedSpec):
        seeded = f"seed {seed.base} on every request"
    elif seed is not None:
        seeded = f"seed {seed} on every request"
    else:
        seeded = "no seed"
    return f"{spec.samples} per row; {seeded}"


def _describe_limits(spec: JobSpec) -> str:
    limits, retry = spec.limits, spec.retry
    rpm = f"{limits.rpm:,} rpm" if limits.rpm else "no rpm limit"
    tpm = f"{limits.tpm:,} tpm" if limits.tpm else "no tpm limit"
    return (
        f"{rpm}, {tpm}, {limits.max_concurrency} concurrent; "
        f"up to {retry.max_attempts} attempts, waits ≤ {retry.max_wait_s:g}s"
    )


# -- plan's output --------------------------------------------------------------------------------


@dataclass
class _PlanTotals:
    """Running sums over the planned requests (nothing per request is kept)."""

    prices: PriceTable
    row_ids: int = 0
    requests: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    cost_low: float = 0.0
    cost_high: float = 0.0
    unpriced: set[str] = field(default_factory=set)
    issues: list[InputIssue] = field(default_factory=list)
    #: requests a template failed on (a run records them as error rows and sends the rest)
    failures: list[RowFailure] = field(default_factory=list)

    @classmethod
    def for_spec(cls, spec: JobSpec) -> _PlanTotals:
        return cls(prices=PriceTable.from_spec(spec))

    def add(self, request: ChatRequest) -> None:
        self.requests += 1
        self.row_ids += request.sample == 0
        self.prompt_tokens += request.est_prompt_tokens
        self.output_tokens += request.max_output_tokens
        bounds = self.prices.request_cost_bounds(request)
        if bounds is None:
            self.unpriced.add(str(request.body.get("model")))
        else:
            self.cost_low += bounds[0]
            self.cost_high += bounds[1]


def _written(requests: Iterator[ChatRequest], out: Path) -> Iterator[ChatRequest]:
    """Pass requests through while writing them as Batch API lines; the file appears whole."""
    partial = out.with_name(out.name + ".partial")
    out.parent.mkdir(parents=True, exist_ok=True)
    with partial.open("wb") as fh:
        for request in requests:
            fh.write(batch_line(request))
            yield request
    partial.replace(out)


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


def _totals_rows(spec: JobSpec, totals: _PlanTotals, out: Path | None) -> Iterator[tuple[str, str]]:
    yield "job", f"{spec.name}: {spec.request.get('model')} via {_endpoint_name(spec)}"
    rows = totals.row_ids + sum(failure.sample == 0 for failure in totals.failures)
    yield "rows", f"{rows:,}"
    yield "requests", f"{totals.requests:,}  ({spec.samples} per row)"
    yield "prompt tokens", f"~{totals.prompt_tokens:,} (offline estimate)"
    yield "output tokens", f"≤ {totals.output_tokens:,} (the requests' limits)"
    yield "cost", _describe_cost(totals)
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
        yield "written", f"{_shown(out)} ({totals.requests:,} Batch API lines)"


def _describe_cost(totals: _PlanTotals) -> str:
    if totals.requests == 0:
        return "$0 (no requests)"
    parts = []
    if totals.cost_high > 0 or not totals.unpriced:
        parts.append(f"{_usd(totals.cost_low)} – {_usd(totals.cost_high)}")
    if totals.unpriced:
        names = ", ".join(sorted(totals.unpriced))
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
