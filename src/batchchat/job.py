"""A job compiled once: its input, request, prices and result columns, every check made.

A run, ``batchchat validate``, ``batchchat plan`` and the Python API all compile a spec
here, so a job is read and checked one way, and every problem is found at once, before
anything is sent or written: a spec that does not fit its input, duplicate ids, labels
that cannot be told apart, kept columns that clash with result columns, a bad price.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from batchchat.answers.check import JobCheck, answer_check, parse_status_group
from batchchat.errors import BatchchatError, InputError, SpecError
from batchchat.execute.endpoint import resolve_headers
from batchchat.labels.columns import label_column_group
from batchchat.planning.compile import compile_request
from batchchat.planning.ids import check_unique_ids
from batchchat.planning.planner import Plan, compile_plan
from batchchat.planning.source import InputSource
from batchchat.planning.validate import plan_problems, read_every_line
from batchchat.pricing import PriceTable
from batchchat.results.layout import OutputLayout
from batchchat.results.schema import ResultColumns, result_columns
from batchchat.results.upstream import Upstream, is_output_dir, open_upstream
from batchchat.spec import EndpointSpec, JobSpec

T = TypeVar("T")


@dataclass(frozen=True)
class CompiledJob:
    """Everything a run needs before it opens its output directory, read and checked once."""

    spec: JobSpec
    plan: Plan
    prices: PriceTable
    columns: ResultColumns
    #: the check of each answer (JSON, schema, label); None when the job checks nothing
    check: JobCheck | None = None
    #: the output directory read as input (chaining); None when the input is files
    upstream: Upstream | None = None

    @property
    def warnings(self) -> list[str]:
        """What is allowed but worth a look before a run."""
        found = list(self.plan.request.warnings)
        found += reask_warnings(self.spec)
        found += self.upstream.warnings if self.upstream is not None else []
        found += [
            f"{where}.headers.{name}: a secret written in the spec itself; name an environment "
            f"variable instead, as ${{VAR}} (job.yaml in the output shows it as ***)"
            for where, endpoint in _endpoints(self.spec)
            for name in endpoint.literal_secret_headers()
        ]
        return found

    @property
    def output_dir(self) -> Path:
        return self.spec.output_dir


def compile_job(
    spec: JobSpec, *, require_key: bool = True, read_every_line: bool = False
) -> CompiledJob:
    """Compile ``spec``; SpecError listing every problem when it is not ready to run.

    ``require_key``: the endpoint's key variable must be set (a real run); ``validate``
    and ``plan`` only mention a missing key. ``read_every_line`` (``validate``): read the
    whole input as a run would, to find what would stop a run partway (a malformed line,
    a value that does not fit the types of the first lines); a run meets those as it goes.
    """
    problems = _Problems()
    compiled = _compile(spec, problems, require_key=require_key, every_line=read_every_line)
    if compiled is not None and not problems.lines:
        return compiled
    if len(problems.raised) == 1 and len(problems.lines) == 1:
        raise problems.raised[0]  # one problem: its own error, of its own type
    count = len(problems.lines)
    raise SpecError(
        f"job '{spec.name}' is not ready to run ({count} problem{'s' if count > 1 else ''}):",
        problems.lines,
    )


def recompile_job(spec: JobSpec, source: InputSource) -> CompiledJob:
    """``spec`` compiled again for an input :func:`compile_job` resolved and checked already
    (in another process: a compiled request holds templates, which do not travel). Nothing
    is read from the input, and nothing checked twice."""
    problems = _Problems()
    plan = Plan(spec.name, source, compile_request(spec))
    prices = problems.check(lambda: PriceTable.from_spec(spec))
    check = _answer_check(spec)
    columns = _result_columns(spec, plan, problems, check)
    if prices is None or columns is None:
        raise SpecError(f"job '{spec.name}' cannot be compiled again:", problems.lines)
    return CompiledJob(spec, plan, prices, columns, check)


def job_problems(spec: JobSpec) -> list[str]:
    """Every problem :func:`compile_job` would raise (without requiring the key, reading
    every line of the input), as lines."""
    problems = _Problems()
    _compile(spec, problems, require_key=False, every_line=True)
    return problems.lines


def _compile(
    spec: JobSpec, problems: _Problems, *, require_key: bool, every_line: bool = False
) -> CompiledJob | None:
    chained = problems.check(lambda: _chained_input(spec))
    plan = upstream = None
    if chained is not None:
        spec, upstream = chained
        rows = None if upstream is None else upstream.rows
        plan = problems.check(lambda: compile_plan(spec, rows))
    prices = problems.check(lambda: PriceTable.from_spec(spec))
    if require_key:
        for where, endpoint in _endpoints(spec):
            # a pool's simulator member may name a key: it is sent (a wrong key rehearsed)
            if not endpoint.is_simulator or (spec.endpoints and endpoint.api_key_env):
                problems.check(functools.partial(resolve_headers, endpoint, where=where))
    output_problem = OutputLayout(spec.output_dir).problem()
    if output_problem is not None:
        problems.lines.append(f"  {output_problem}")
    if plan is None:
        return None
    problems.lines.extend(f"  {line}" for line in plan_problems(plan))
    problems.check(lambda: _check_ids(plan, upstream))
    if every_line:
        problems.check(lambda: read_every_line(plan.source))
    check = _answer_check(spec)
    columns = _result_columns(spec, plan, problems, check)
    if prices is None or columns is None:
        return None
    return CompiledJob(spec, plan, prices, columns, check, upstream)


def _chained_input(spec: JobSpec) -> tuple[JobSpec, Upstream | None]:
    """The upstream results when ``input.path`` is a batchchat output directory, with the
    spec their rows are planned with (row ids are the upstream's unless it names another
    id column); planning itself knows nothing of output directories."""
    root = spec.resolve_path(spec.input.path)
    if not is_output_dir(root):
        if spec.input.where is None:
            return spec, None
        if not root.exists():
            raise InputError(
                f"input.path: {root} does not exist; with input.where it is the output "
                "directory of another job: run that job first"
            )
        raise SpecError(
            f"input.where: filters the results of a batchchat output directory, and "
            f"input.path {root} is not one"
        )
    if root == spec.output_dir:
        raise SpecError(f"input.path: {root} is this job's own output directory")
    upstream = open_upstream(root, spec.input.where)
    if spec.input.id_column is None:
        spec = spec.model_copy(
            update={"input": spec.input.model_copy(update={"id_column": "row_id"})}
        )
    return spec, upstream


def _check_ids(plan: Plan, upstream: Upstream | None) -> None:
    try:
        check_unique_ids(plan.source)
    except InputError as exc:
        if upstream is None or not upstream.has_samples:
            raise
        raise InputError(
            f"{exc}\n  the upstream job asked each row several times (samples): read one "
            "sample with input.where: sample = 0, or name another input.id_column"
        ) from None


def _answer_check(spec: JobSpec) -> JobCheck | None:
    try:
        return answer_check(spec)
    except SpecError:
        return None  # bad labels or a bad schema: the result columns report it, once


def reask_warnings(spec: JobSpec) -> list[str]:
    """Re-ask settings that are allowed but will not do what they seem to."""
    reask = spec.output.reask
    if reask is None or reask.count == 0:
        return []
    found = []
    if spec.output.parse is None and spec.output.labels is None:
        found.append(
            "output.reask: without output.parse or output.labels only answers cut by the "
            "token limit are asked again"
        )
    temperature = spec.request.get("temperature")
    if not reask.repair and (temperature == 0 or spec.seed is not None):
        found.append(
            "output.reask.repair is false and the request is deterministic (temperature 0 "
            "or a seed): asked the same again, a model will most likely answer the same"
        )
    return found


def _result_columns(
    spec: JobSpec, plan: Plan, problems: _Problems, check: JobCheck | None
) -> ResultColumns | None:
    # kept columns missing from the input are plan problems already: not repeated here
    schema = plan.source.schema
    kept = [name for name in spec.output.keep_columns if name in schema]
    output = spec.output.model_copy(update={"keep_columns": kept})
    checked = spec.model_copy(update={"output": output})
    labels = problems.check(lambda: label_column_group(checked))
    if labels is None and spec.output.labels is not None:
        problems.check(lambda: result_columns(checked, schema))  # the kept columns, alone
        return None
    extra = [labels] if labels is not None else []
    if check is not None:
        extra.append(parse_status_group(check))
    columns = problems.check(lambda: result_columns(checked, schema, extra_groups=extra))
    return columns if len(kept) == len(spec.output.keep_columns) else None


def _endpoints(spec: JobSpec) -> list[tuple[str, EndpointSpec]]:
    """The spec's endpoint, or each member of its pool, with where the spec says it."""
    if spec.endpoints is None:
        return [("endpoint", spec.endpoint)]
    return [(f"endpoints[{member.name}]", member) for member in spec.endpoints]


class _Problems:
    """Problems, collected from checks that raise: one indented entry per problem."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        #: the errors the checks raised
        self.raised: list[BatchchatError] = []

    def check(self, check: Callable[[], T]) -> T | None:
        """Run ``check``; what it raises becomes problems (and None is returned)."""
        try:
            return check()
        except SpecError as exc:
            self.raised.append(exc)
            found = exc.problems or [str(exc)]
            self.lines.extend(line if line.startswith("  ") else _indented(line) for line in found)
        except BatchchatError as exc:
            self.raised.append(exc)
            self.lines.append(_indented(str(exc)))
        return None


def _indented(text: str) -> str:
    return "  " + text.replace("\n", "\n  ")
