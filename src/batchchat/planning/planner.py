"""Rows × compiled request → :class:`ChatRequest`: id, body, hash, token estimate, seed.

Planning is pure and deterministic: the same spec and data give the same requests,
byte for byte. :func:`compile_plan` reads the input's schema and compiles the request
once; :meth:`Plan.requests` then streams the requests, rendering only what a row needs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import orjson
import polars as pl

from batchchat.errors import SpecError, TemplateError
from batchchat.models import ChatRequest, custom_id
from batchchat.planning.compile import PROMPT_EXTRAS, CompiledRequest, compile_request, extra_tokens
from batchchat.planning.fields import checked_body
from batchchat.planning.ids import check_unique_ids
from batchchat.planning.messages import assemble_messages
from batchchat.planning.reader import OnIssue, iter_batches
from batchchat.planning.source import InputSource, input_source
from batchchat.planning.tokens import estimate_prompt_tokens
from batchchat.spec import JobSpec, SeedSpec

#: completion tokens assumed per choice when the request sets no limit
DEFAULT_MAX_OUTPUT_TOKENS = 1024


@dataclass(frozen=True)
class Plan:
    """A job's input and request, each resolved once; the requests come from here."""

    #: the job's name, for messages
    name: str
    source: InputSource
    request: CompiledRequest

    def requests(
        self,
        *,
        skip: Skip | None = None,
        on_issue: OnIssue | None = None,
        on_failure: Callable[[RowFailure], None] | None = None,
        check_ids: bool = True,
    ) -> Iterator[ChatRequest]:
        """The job's requests, lazily, in input order: every row × ``samples``.

        ``skip(row_ids, sample)`` gives, for a batch's row ids, which are already done for
        that sample: those requests are not rendered. A row a template fails on goes to
        ``on_failure`` and planning goes on; without ``on_failure`` its
        :class:`TemplateError` is raised. ``check_ids=False``: the caller has already run
        :func:`batchchat.planning.ids.check_unique_ids`.
        """
        _raise_problems(self.request.problems)
        if check_ids:
            check_unique_ids(self.source)
        planner = RowPlanner(self.request, self.source.spec.id_column, on_failure)
        position = 0
        for batch in iter_batches(self.source, on_issue=on_issue):
            yield from planner.plan_batch(batch, position, skip)
            position += batch.height


def compile_plan(spec: JobSpec, rows: pl.LazyFrame | None = None) -> Plan:
    """Resolve the input (files, columns) and compile the request, once each; ``rows``:
    the input's rows as a table the caller read (a batchchat output directory's results)."""
    return Plan(spec.name, input_source(spec, rows), compile_request(spec))


@dataclass(frozen=True, slots=True)
class RowFailure:
    """A request that cannot be built from its row (a template failed on this row's data)."""

    row_id: str
    sample: int
    #: the row's ``output.keep_columns``, so the error row still carries them
    keep: dict[str, Any]
    error: TemplateError
    #: the row's 0-based position in the input
    row_index: int | None = None


#: ``skip(row_ids, sample)``: which of a batch's row ids are already done for ``sample``
Skip = Callable[[pl.Series, int], pl.Series]


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


class RowPlanner:
    """Renders the rows of one batch; holds what stays the same from row to row."""

    def __init__(
        self,
        compiled: CompiledRequest,
        id_column: str | None,
        on_failure: Callable[[RowFailure], None] | None = None,
    ) -> None:
        self.compiled = compiled
        self.id_column = id_column
        self.on_failure = on_failure
        self.fields = compiled.fields
        self.dynamic = compiled.dynamic_fields
        self.messages = compiled.messages
        self.static_tokens = compiled.static_tokens
        self.count_text = compiled.count_text
        self.columns = compiled.columns
        self.base_url = compiled.base_url
        self.vars = dict(compiled.variables)
        self.builtins = compiled.builtins
        self.keep_columns = compiled.keep_columns

    def plan_batch(
        self, batch: pl.DataFrame, position: int, skip: Skip | None
    ) -> Iterator[ChatRequest]:
        id_series = _row_ids(batch, self.id_column, position)
        ids: list[str] = id_series.to_list()
        samples = range(self.compiled.samples)
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
                    request = self.plan_row(rows[index], row_id, sample, position + index)
                except TemplateError as exc:
                    if self.on_failure is None:
                        raise
                    keep = self._keep(rows[index])
                    self.on_failure(RowFailure(row_id, sample, keep, exc, position + index))
                    continue
                yield request

    def plan_row(
        self, row: dict[str, Any], row_id: str, sample: int, row_index: int | None = None
    ) -> ChatRequest:
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
            row_index=row_index,
        )

    def _keep(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return {column: row.get(column) for column in self.keep_columns}

    def _rows(self, batch: pl.DataFrame) -> list[dict[str, Any]]:
        wanted = self._wanted(batch)
        if not wanted:  # templates that read no column: one empty row per input row
            return [{} for _ in range(batch.height)]
        return batch.select(wanted).to_dicts()

    def _wanted(self, batch: pl.DataFrame) -> list[str]:
        if self.columns is None:
            return batch.columns
        wanted = self.columns | set(self.keep_columns)
        return [c for c in batch.columns if c in wanted]

    def _seed(self, body: dict[str, Any], row_id: str, sample: int) -> int | None:
        seed = self.compiled.seed
        if isinstance(seed, SeedSpec):
            body["seed"] = derive_seed(seed.base, row_id, sample) if seed.per_row else seed.base
        elif seed is not None:
            body["seed"] = seed
        value = body.get("seed")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def _prompt_tokens(self, body: Mapping[str, Any], fresh: list[Any]) -> int:
        tokens = estimate_prompt_tokens(fresh, counter=self.count_text) + self.static_tokens
        extras = {k: body[k] for k in PROMPT_EXTRAS if k in self.dynamic and k in body}
        return tokens + extra_tokens(extras, self.count_text) if extras else tokens


def max_output_tokens(body: Mapping[str, Any]) -> int:
    """The most completion tokens a body allows: the token limit × ``n``."""
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    choices = body.get("n") or 1
    return int(limit or DEFAULT_MAX_OUTPUT_TOKENS) * int(choices)


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
