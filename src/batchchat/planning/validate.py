"""Every way a job does not fit its input, found before anything is sent, all at once.

Checks the columns and vars the templates read, ``output.keep_columns`` and
``input.id_column``, the types of static request fields, and renders the first rows
to catch type errors in templated ones.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from batchchat.errors import TemplateError
from batchchat.planning.planner import Plan, RowPlanner
from batchchat.planning.reader import iter_batches, read_head
from batchchat.planning.source import InputSource
from batchchat.planning.templates import TemplateRef, did_you_mean

#: rows rendered to catch type errors before a run starts
TRIAL_ROWS = 20


def plan_problems(plan: Plan) -> list[str]:
    """Every way the plan's request does not fit its input, each with its location."""
    compiled, source = plan.request, plan.source
    columns = source.columns
    problems = list(compiled.problems)
    for ref in compiled.refs:
        problems.extend(_ref_problems(ref, columns, compiled.variables, set(compiled.builtins)))
        problems.extend(_binary_problems(ref, source.schema))
    problems.extend(_column_problems(plan, source.schema))
    if not problems:
        problems.extend(_trial_problems(plan))
    return problems


def read_every_line(source: InputSource) -> int:
    """Read the whole input as a run reads it; the number of rows. Raises InputError at
    what would stop a run partway (a malformed line, a value that does not fit the column
    types inferred from the first lines) unless ``input.on_bad_line: skip``."""
    return sum(batch.height for batch in iter_batches(source, columns=source.columns))


def _ref_problems(
    ref: TemplateRef, columns: list[str], variables: Mapping[str, str], builtins: set[str]
) -> list[str]:
    problems = [
        f"{ref.location}: column '{name}' does not exist in the input" + did_you_mean(name, columns)
        for name in sorted(ref.columns - set(columns) - builtins)
    ]
    problems.extend(
        f"{ref.location}: vars.{name} is not set (add it under vars: or pass --var {name}=...)"
        for name in sorted(ref.var_names - set(variables))
    )
    return problems


def _binary_problems(ref: TemplateRef, schema: Mapping[str, pl.DataType]) -> list[str]:
    """Raw bytes never reach a template (they would be sent as ``b'...'``)."""
    return [
        f"{ref.location}: column '{name}' holds raw bytes (binary), not text; a template "
        "cannot use it (store it as a string column, or base64-encode it first)"
        for name in sorted(ref.columns)
        if name in schema and schema[name] == pl.Binary
    ]


def _column_problems(plan: Plan, schema: Mapping[str, pl.DataType]) -> list[str]:
    columns = list(schema)
    problems = [
        f"output.keep_columns: column '{name}' does not exist in the input"
        + did_you_mean(name, columns)
        for name in plan.request.keep_columns
        if name not in schema
    ]
    id_column = plan.source.spec.id_column
    if id_column is not None and id_column not in schema:
        problems.append(
            f"input.id_column: column '{id_column}' does not exist in the input"
            + did_you_mean(id_column, columns)
        )
    elif id_column is not None and not (
        schema[id_column] == pl.String or schema[id_column].is_integer()
    ):
        problems.append(
            f"input.id_column: column '{id_column}' is {schema[id_column]}; ids must be text "
            "or integers"
        )
    return problems


def _trial_problems(plan: Plan) -> list[str]:
    """Render the first rows: a template that breaks on real data fails here, not mid-run."""
    head = read_head(plan.source, TRIAL_ROWS)
    planner = RowPlanner(plan.request, plan.source.spec.id_column)
    try:
        for _ in planner.plan_batch(head, 0, None):
            pass
    except TemplateError as exc:
        return str(exc).splitlines()
    return []
