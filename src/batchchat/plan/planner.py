"""Rows × spec → :class:`ChatRequest`: id, body, hash, token estimate, seed.

Planning is pure and deterministic: the same spec and data give the same
requests, byte for byte. The request tree is compiled once per spec
(:func:`compile_request`); per row only templated leaves are rendered and only
templated fields are type-checked (static ones are checked once, up front).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import orjson
import polars as pl
from jinja2 import Environment

from batchchat.errors import SpecError, TemplateError
from batchchat.models import ChatRequest, custom_id
from batchchat.plan.fields import checked_body, field_problems
from batchchat.plan.messages import MessageLayout, assemble_messages, message_problems, show_value
from batchchat.plan.reader import OnIssue, iter_batches, read_head, read_schema
from batchchat.plan.templates import (
    CompiledTree,
    TemplateRef,
    compile_tree,
    did_you_mean,
    format_location,
    make_environment,
)
from batchchat.plan.tokens import (
    REPLY_PRIMING_TOKENS,
    TextCounter,
    estimate_prompt_tokens,
    estimate_text_tokens,
    text_counter,
)
from batchchat.spec import JobSpec, SeedSpec

#: completion tokens assumed per choice when the request sets no limit
DEFAULT_MAX_OUTPUT_TOKENS = 1024
#: rows rendered by check_spec_against_input to catch type errors before a run starts
TRIAL_ROWS = 20
#: body fields that the model reads as part of the prompt besides the messages
_PROMPT_EXTRAS = ("tools", "response_format")


@dataclass(frozen=True, slots=True)
class CompiledRequest:
    """A spec's request, compiled once: one tree per top-level body field."""

    fields: tuple[tuple[str, CompiledTree], ...]
    #: row columns the templates read; None when one of them needs the whole row
    columns: frozenset[str] | None
    #: prompt tokens of the static messages, tools and response_format, counted once
    static_tokens: int
    #: which messages are templated or spliced (the others were checked here, once)
    messages: MessageLayout
    #: counts a text's tokens (``limits.tokenizer``)
    count_text: TextCounter
    #: template syntax errors and static fields of the wrong type, each with its location
    problems: tuple[str, ...] = ()

    @property
    def refs(self) -> tuple[TemplateRef, ...]:
        return tuple(ref for _, tree in self.fields for ref in tree.refs)

    @property
    def dynamic_fields(self) -> tuple[str, ...]:
        """The templated top-level fields, in the spec's order."""
        return tuple(key for key, tree in self.fields if not tree.is_static)


def compile_request(spec: JobSpec) -> CompiledRequest:
    """Compile ``spec.request`` once; static fields are type-checked here, once."""
    env = make_environment(spec.base_dir)
    fields: list[tuple[str, CompiledTree]] = []
    problems: list[str] = []
    try:
        count_text = text_counter(spec.limits.tokenizer)
    except SpecError as exc:  # reported with the other problems of the spec
        problems.append(str(exc))
        count_text = estimate_text_tokens
    static_tokens = 0
    layout = MessageLayout()
    for key, value in spec.request.items():
        if key == "messages" and isinstance(value, list):
            tree, layout, static_tokens = _compile_messages(value, env, problems, count_text)
        else:
            tree = compile_tree(value, format_location("request", key), env, key=key)
            problems.extend(tree.problems)
            if key == "messages" and not tree.is_static:
                layout = MessageLayout(whole=True)
            elif tree.is_static and not tree.problems:
                problems.extend(field_problems(key, tree.render({})))
        fields.append((key, tree))
    refs = [ref for _, tree in fields for ref in tree.refs]
    columns = None
    if not any(ref.uses_whole_row for ref in refs):
        columns = frozenset(name for ref in refs for name in ref.columns)
    if not problems:
        static_tokens += sum(
            _extra_tokens({key: tree.render({})}, count_text)
            for key, tree in fields
            if key in _PROMPT_EXTRAS and tree.is_static
        )
    return CompiledRequest(
        tuple(fields), columns, static_tokens, layout, count_text, tuple(problems)
    )


def _compile_messages(
    messages: list[Any], env: Environment, problems: list[str], count_text: TextCounter
) -> tuple[CompiledTree, MessageLayout, int]:
    """One tree per item: static messages are checked and counted once, here.

    An item that is a lone template string is a splice: its value (messages from a
    column) takes its place, row by row.
    """
    if not messages:
        problems.append("request.messages: must be a non-empty list of messages, got list []")
    trees = [compile_tree(m, f"request.messages[{i}]", env) for i, m in enumerate(messages)]
    static_tokens = 0
    templated: list[int] = []
    spliced: dict[int, str] = {}
    for index, (item, tree) in enumerate(zip(messages, trees, strict=True)):
        problems.extend(tree.problems)
        if isinstance(item, str) and not tree.is_static:
            spliced[index] = _source_name(tree.refs)
        elif not tree.is_static:
            templated.append(index)
        elif not tree.problems:
            problems.extend(_static_message_problems(item, index))
            # the estimate is a sum over messages, so static ones can be counted apart
            counted = estimate_prompt_tokens([item], counter=count_text)
            static_tokens += counted - REPLY_PRIMING_TOKENS
    renders = [tree.render for tree in trees]
    tree = CompiledTree(
        render=lambda ctx: [render(ctx) for render in renders],
        refs=tuple(ref for tree in trees for ref in tree.refs),
        problems=(),
    )
    return tree, MessageLayout(tuple(templated), spliced), static_tokens


def _static_message_problems(item: Any, index: int) -> list[str]:
    if isinstance(item, dict):
        return message_problems([item], "request.messages", first=index)
    return [
        f"request.messages[{index}]: a message is a mapping with role and content, or a "
        f'template such as "{{{{ history }}}}" that splices in a column\'s messages; '
        f"got {show_value(item)}"
    ]


def _source_name(refs: tuple[TemplateRef, ...]) -> str:
    """What a splice reads, for errors: its column, else its template."""
    columns = {name for ref in refs for name in ref.columns}
    if len(columns) == 1:
        return columns.pop()
    return " ".join(ref.source for ref in refs) or "the template"


# -- planning -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RowFailure:
    """A request that cannot be built from its row (a template failed on this row's data)."""

    row_id: str
    sample: int
    #: the row's ``output.keep_columns``, so the error row still carries them
    keep: dict[str, Any]
    error: TemplateError


#: ``skip(row_ids, sample)``: which of a batch's row ids are already done for ``sample``
Skip = Callable[[pl.Series, int], pl.Series]


def iter_requests(
    spec: JobSpec,
    *,
    skip: Skip | None = None,
    on_issue: OnIssue | None = None,
    on_failure: Callable[[RowFailure], None] | None = None,
    ids_checked: bool = False,
) -> Iterator[ChatRequest]:
    """The job's requests, lazily, in input order: every row × ``samples``.

    ``skip(row_ids, sample)`` gives, for a batch's row ids, which are already done for that
    sample: those requests are not rendered.
    A row a template fails on goes to ``on_failure`` and planning goes on; without
    ``on_failure`` its :class:`TemplateError` is raised. ``ids_checked``: the caller has
    already run :func:`batchchat.plan.reader.check_unique_ids`.
    """
    compiled = compile_request(spec)
    _raise_problems(compiled.problems)
    planner = _RowPlanner(spec, compiled, on_failure)
    position = 0
    for batch in iter_batches(spec, on_issue=on_issue, check_ids=not ids_checked):
        yield from planner.plan_batch(batch, position, skip)
        position += batch.height


def spec_builtins(spec: JobSpec) -> dict[str, Any]:
    """Names a spec adds to its templates: ``labels`` (label → description) in a labeling job.

    They win over a column of the same name, which stays readable as ``row.<name>``.
    """
    labels = spec.output.labels
    if labels is None:
        return {}
    return {"labels": dict(labels) if isinstance(labels, dict) else dict.fromkeys(labels, "")}


def derive_seed(base: int, row_id: str, sample: int) -> int:
    """A stable 31-bit seed for (base, row id, sample)."""
    digest = hashlib.sha256(f"{base}\x1f{row_id}\x1f{sample}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFF_FFFF


def request_hash(body: Mapping[str, Any], base_url: str) -> str:
    """sha256 of the canonical body plus the endpoint identity (never the key)."""
    canonical = orjson.dumps(
        {"base_url": base_url, "body": body},
        option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS,
    )
    return hashlib.sha256(canonical).hexdigest()


def batch_line(request: ChatRequest) -> bytes:
    """One line of an OpenAI Batch API input file (also what vLLM's run_batch reads)."""
    line = {
        "custom_id": request.custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": request.body,
    }
    return orjson.dumps(line, option=orjson.OPT_NON_STR_KEYS) + b"\n"


class _RowPlanner:
    """Renders the rows of one batch; holds what stays the same from row to row."""

    def __init__(
        self,
        spec: JobSpec,
        compiled: CompiledRequest,
        on_failure: Callable[[RowFailure], None] | None = None,
    ) -> None:
        self.spec = spec
        self.on_failure = on_failure
        self.fields = compiled.fields
        self.dynamic = compiled.dynamic_fields
        self.messages = compiled.messages
        self.static_tokens = compiled.static_tokens
        self.count_text = compiled.count_text
        self.columns = compiled.columns
        self.base_url = spec.endpoint.base_url
        self.vars = dict(spec.vars)
        self.builtins = spec_builtins(spec)

    def plan_batch(
        self, batch: pl.DataFrame, position: int, skip: Skip | None
    ) -> Iterator[ChatRequest]:
        id_series = _row_ids(batch, self.spec.input.id_column, position)
        ids: list[str] = id_series.to_list()
        samples = range(self.spec.samples)
        # what is already done, a whole batch per sample at once (resume is vectorised)
        done = [skip(id_series, sample).to_list() for sample in samples] if skip else None
        rows: list[dict[str, Any]] | None = None  # converted only when a row needs rendering
        for index, row_id in enumerate(ids):
            for sample in samples:
                if done is not None and done[sample][index]:
                    continue
                if rows is None:
                    rows = self._rows(batch)
                try:
                    request = self.plan_row(rows[index], row_id, sample)
                except TemplateError as exc:
                    if self.on_failure is None:
                        raise
                    self.on_failure(RowFailure(row_id, sample, self._keep(rows[index]), exc))
                    continue
                yield request

    def plan_row(self, row: dict[str, Any], row_id: str, sample: int) -> ChatRequest:
        ctx = {**row, "row": row, "vars": self.vars, "row_id": row_id, "sample": sample}
        if self.builtins:
            ctx.update(self.builtins)
        body = {key: tree.render(ctx) for key, tree in self.fields}
        body = checked_body(body, self.dynamic, row_id)
        fresh: list[Any] = []  # the messages not counted up front
        if "messages" in self.dynamic:
            body["messages"], fresh = assemble_messages(body["messages"], self.messages, row_id)
        seed = self._seed(body, row_id, sample)
        return ChatRequest(
            row_id=row_id,
            sample=sample,
            custom_id=custom_id(row_id, sample),
            body=body,
            request_hash=request_hash(body, self.base_url),
            est_prompt_tokens=self._prompt_tokens(body, fresh),
            max_output_tokens=max_output_tokens(body),
            seed=seed,
            keep=self._keep(row),
        )

    def _keep(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return {column: row.get(column) for column in self.spec.output.keep_columns}

    def _rows(self, batch: pl.DataFrame) -> list[dict[str, Any]]:
        wanted = self._wanted(batch)
        if not wanted:  # templates that read no column: one empty row per input row
            return [{} for _ in range(batch.height)]
        return batch.select(wanted).to_dicts()

    def _wanted(self, batch: pl.DataFrame) -> list[str]:
        if self.columns is None:
            return batch.columns
        wanted = self.columns | set(self.spec.output.keep_columns)
        return [c for c in batch.columns if c in wanted]

    def _seed(self, body: dict[str, Any], row_id: str, sample: int) -> int | None:
        seed = self.spec.seed
        if isinstance(seed, SeedSpec):
            body["seed"] = derive_seed(seed.base, row_id, sample) if seed.per_row else seed.base
        elif seed is not None:
            body["seed"] = seed
        value = body.get("seed")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def _prompt_tokens(self, body: Mapping[str, Any], fresh: list[Any]) -> int:
        tokens = estimate_prompt_tokens(fresh, counter=self.count_text) + self.static_tokens
        extras = {k: body[k] for k in _PROMPT_EXTRAS if k in self.dynamic and k in body}
        return tokens + _extra_tokens(extras, self.count_text) if extras else tokens


def max_output_tokens(body: Mapping[str, Any]) -> int:
    """The most completion tokens a body allows: the token limit × ``n``."""
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    choices = body.get("n") or 1
    return int(limit or DEFAULT_MAX_OUTPUT_TOKENS) * int(choices)


def _extra_tokens(fields: Mapping[str, Any], count_text: TextCounter) -> int:
    # tool definitions and a JSON schema are shown to the model as part of the prompt
    return sum(count_text(orjson.dumps(v).decode()) for v in fields.values())


def _row_ids(batch: pl.DataFrame, id_column: str | None, position: int) -> pl.Series:
    if id_column is None:
        positions = pl.int_range(position, position + batch.height, eager=True)
        return positions.cast(pl.String).rename("row_id")
    ids = batch.get_column(id_column).cast(pl.String)
    if ids.null_count():
        at = position + cast(int, ids.is_null().arg_max())
        raise TemplateError(f"input.id_column: row {at} has no id (column '{id_column}' is empty)")
    return ids


def _raise_problems(problems: tuple[str, ...]) -> None:
    # template syntax errors and static fields of the wrong type: the spec is wrong, not a row
    if problems:
        raise SpecError("the request cannot be planned:", [f"  {p}" for p in problems])


# -- checking a spec against its input -----------------------------------------------------------


def check_spec_against_input(spec: JobSpec) -> None:
    """Raise SpecError listing every way the spec does not fit its input, all at once.

    Checks the columns and vars the templates read, ``output.keep_columns`` and
    ``input.id_column``, the types of static request fields, and renders the first
    rows to catch type errors in templated ones.
    """
    schema = read_schema(spec)
    compiled = compile_request(spec)
    problems = list(compiled.problems)
    for ref in compiled.refs:
        problems.extend(_ref_problems(ref, list(schema), spec.vars, set(spec_builtins(spec))))
    problems.extend(_column_problems(spec, schema))
    if "seed" in spec.request and spec.seed is not None:
        problems.append("request.seed: set a seed in one place only (the top-level seed: wins)")
    if not problems:
        problems.extend(_trial_problems(spec, compiled))
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        raise SpecError(
            f"job '{spec.name}' does not fit its input {spec.input.path} ({count}):",
            [f"  {p}" for p in problems],
        )


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


def _column_problems(spec: JobSpec, schema: Mapping[str, pl.DataType]) -> list[str]:
    columns = list(schema)
    problems = [
        f"output.keep_columns: column '{name}' does not exist in the input"
        + did_you_mean(name, columns)
        for name in spec.output.keep_columns
        if name not in schema
    ]
    id_column = spec.input.id_column
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


def _trial_problems(spec: JobSpec, compiled: CompiledRequest) -> list[str]:
    """Render the first rows: a template that breaks on real data fails here, not mid-run."""
    head = read_head(spec, TRIAL_ROWS)
    planner = _RowPlanner(spec, compiled)
    try:
        for _ in planner.plan_batch(head, 0, None):
            pass
    except TemplateError as exc:
        return str(exc).splitlines()
    return []
