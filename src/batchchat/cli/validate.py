"""``batchchat validate``: check a job and its input; print a one-screen summary."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import click
import polars as pl
from rich.console import Console
from rich.markup import escape

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
from batchchat.cli._pool import describe_limits, pool_rows
from batchchat.job import CompiledJob
from batchchat.planning.reader import count_rows
from batchchat.spec import JobSpec, SeedSpec, load_spec


@click.command(epilog=docs_epilog("validate"))
@job_argument
@var_option
@reports_errors
def validate(job: Path, variables: tuple[str, ...]) -> None:
    """Check a job spec and its input; print a one-screen summary.

    Checks that every column a template uses exists, the types of request fields
    (rendering the first rows), output.keep_columns, labels, prices, and that ids are
    unique. Exit status: 0 when the job is ready to run, 2 with every problem listed.
    """
    spec = load_spec(job, variables=parse_vars(variables))
    compiled = compiled_or_problems(job, spec, read_every_line=True)
    console = Console(highlight=False)
    console.print(grid(_summary_rows(compiled, job)))
    for warning in compiled.warnings:
        console.print(f"[yellow]warning[/yellow]  {escape(warning)}")
    console.print(
        f"[green]OK[/green]  {job} is ready to run; see its requests with: batchchat plan {job}"
    )


def _summary_rows(compiled: CompiledJob, job: Path) -> Iterator[tuple[str, str]]:
    spec, source = compiled.spec, compiled.plan.source
    where = shown_path(source.files[0]) if len(source.files) == 1 else source.describe()
    limit = f" (limit {spec.input.limit})" if spec.input.limit else ""
    yield "job", f"{spec.name}  ({job})"
    yield "input", f"{where}  [{source.format}]"
    yield "rows", f"{count_rows(source):,}{limit}"
    columns = (f"{name} ({type_name(dtype)})" for name, dtype in source.schema.items())
    yield "columns", ", ".join(columns)
    id_column = spec.input.id_column
    yield "row id", f"column '{id_column}' (unique)" if id_column else "row position (0, 1, …)"
    if spec.endpoints is None:
        yield "endpoint", _describe_endpoint(spec)
    else:
        yield from pool_rows(spec)
    yield "model", str(spec.request.get("model"))
    for ref in compiled.plan.request.refs:
        used = sorted(ref.columns) + [f"vars.{v}" for v in sorted(ref.var_names)]
        yield "template", f"{ref.location} ← {', '.join(used) or '(no columns)'}"
    yield "samples", _describe_samples(spec)
    yield "limits", _describe_limits(spec)
    keep = ", ".join(spec.output.keep_columns) or "(none)"
    yield "output", f"{shown_path(spec.output_dir)}  (keeps: {keep})"
    if spec.budget is not None:
        yield "budget", f"${spec.budget.max_cost_usd:,.2f}"


#: the short names polars prints in frame headers, for the types people meet in inputs
_SHORT_NAMES: dict[type[pl.DataType], str] = {
    pl.String: "str", pl.Binary: "binary", pl.Boolean: "bool", pl.Null: "null",
    pl.Int8: "i8", pl.Int16: "i16", pl.Int32: "i32", pl.Int64: "i64",
    pl.UInt8: "u8", pl.UInt16: "u16", pl.UInt32: "u32", pl.UInt64: "u64",
    pl.Float32: "f32", pl.Float64: "f64", pl.Date: "date", pl.Time: "time",
}  # fmt: skip


def type_name(dtype: object) -> str:
    """``str``, ``i64``, ``list[str]``: short names for the columns line."""
    short = _SHORT_NAMES.get(dtype if isinstance(dtype, type) else type(dtype))
    if short is not None:
        return short
    if isinstance(dtype, pl.List):
        return f"list[{type_name(dtype.inner)}]"
    if isinstance(dtype, pl.Datetime):
        zone = f", {dtype.time_zone}" if dtype.time_zone else ""
        return f"datetime[{dtype.time_unit}{zone}]"
    return str(dtype)


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
    retry = spec.retry
    # a pool's members take these where they set none of their own (shown with each member)
    under = "each endpoint's unless its own: " if spec.endpoints else ""
    return (
        f"{under}{describe_limits(spec.limits)}; "
        f"up to {retry.max_attempts} attempts, waits ≤ {retry.max_wait_s:g}s"
    )
