"""A job's result columns and their Arrow schema, decided once from its spec and input.

The column groups themselves are :mod:`batchchat.results.columns`'. Another module adds
its own columns (labels, say) by passing more groups as ``extra_groups`` to
:func:`result_columns`; the :class:`batchchat.results.encoder.ResultEncoder` turns the
values into Arrow tables.

Every part is written with the full explicit schema, so an all-null column has
the same type in every part of every run. The schema depends only on the spec
and the input's column types — never on the data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from batchchat.errors import SpecError
from batchchat.results import columns
from batchchat.results.columns import ColumnGroup
from batchchat.results.structured import StructuredOutput, list_of, response_json_schema
from batchchat.secrets import Redactor, redact_shapes
from batchchat.spec import JobSpec


@dataclass(frozen=True)
class ResultColumns:
    """What decides a job's result columns, resolved once from its spec and input."""

    #: the kept input columns and their Arrow types
    keep: Mapping[str, pa.DataType]
    #: whether the ``choices`` column exists (the request may ask for ``n > 1``)
    choices: bool
    #: the parser of ``output.parse: json`` answers (None: no ``parsed`` column)
    structured: StructuredOutput | None
    #: whether ``raw_response`` is kept
    raw: bool
    #: groups another stage adds (labels)
    extra: tuple[ColumnGroup, ...] = ()
    #: whether the ``endpoint`` column exists (a pool of endpoints)
    endpoint: bool = False

    def groups(
        self, run_id: str | None = None, redact: Redactor = redact_shapes
    ) -> list[ColumnGroup]:
        """Every column group, in column order (``run_id`` fills the ``run_id`` column;
        ``redact`` masks secrets in error messages and raw responses)."""
        groups = [columns.identity(self.keep), columns.outcome(run_id, redact)]
        if self.endpoint:
            groups.append(columns.endpoint())
        groups.append(columns.batch())
        groups.append(columns.response())
        if self.choices:
            groups.append(columns.choices())
        groups.append(columns.usage())
        groups.append(columns.asks())
        if self.structured is not None:
            groups.append(columns.structured(self.structured))
        if self.raw:
            groups.append(columns.raw(redact))
        groups.extend(self.extra)
        return groups

    @property
    def schema(self) -> pa.Schema:
        """The Arrow schema of the results (every part is written with exactly this)."""
        return pa.schema([field for group in self.groups() for field in group.fields])


def always_columns() -> frozenset[str]:
    """The columns every job's results have, whatever its settings: a part written by an
    older batchchat may lack one that was added since (it reads as null), while a missing
    optional column (parsed, labels, kept ones) means the job's settings changed."""
    plain = ResultColumns(keep={}, choices=False, structured=None, raw=False)
    return frozenset(plain.schema.names)


def result_columns(
    spec: JobSpec,
    input_schema: Mapping[str, pl.DataType],
    *,
    extra_groups: Sequence[ColumnGroup] = (),
) -> ResultColumns:
    """The result columns of a job (keep_columns take their input types).

    Raises SpecError for kept columns the input lacks or whose names clash with result
    columns, and for a JSON schema that cannot be stored.
    """
    keep = keep_column_types(spec.output.keep_columns, input_schema)
    structured = None
    if spec.output.parse == "json":
        structured = StructuredOutput(response_json_schema(spec.request))
    columns = ResultColumns(
        keep,
        wants_choices(spec),
        structured,
        spec.output.keep_raw,
        tuple(extra_groups),
        endpoint=spec.endpoints is not None,
    )
    _check_unique(columns.groups(), keep)
    return columns


def keep_column_types(
    names: Sequence[str], input_schema: Mapping[str, pl.DataType]
) -> dict[str, pa.DataType]:
    """The Arrow type of each kept input column; a column the input lacks is a SpecError."""
    types = {}
    for name in names:
        if name not in input_schema:
            known = ", ".join(input_schema) or "none"
            raise SpecError(f"output.keep_columns: the input has no column {name!r} ({known})")
        try:
            arrow = pl.Series(name, [], dtype=input_schema[name]).to_arrow().type
        except Exception as exc:  # polars raises several types for unstorable dtypes
            raise SpecError(
                f"output.keep_columns: column {name!r} of type {input_schema[name]} "
                f"cannot be stored in Parquet ({exc})"
            ) from None
        types[name] = portable_type(arrow)
    return types


def portable_type(arrow: pa.DataType) -> pa.DataType:
    """Polars' Arrow flavour (large/view strings, dictionaries) → the plain portable types."""
    if pa.types.is_large_string(arrow) or pa.types.is_string_view(arrow):
        return pa.string()
    if pa.types.is_large_binary(arrow) or pa.types.is_binary_view(arrow):
        return pa.binary()
    if pa.types.is_dictionary(arrow):
        return portable_type(arrow.value_type)
    if pa.types.is_list(arrow) or pa.types.is_large_list(arrow) or pa.types.is_list_view(arrow):
        return list_of(portable_type(arrow.value_type))
    if pa.types.is_fixed_size_list(arrow):
        return pa.list_(pa.field("element", portable_type(arrow.value_type)), arrow.list_size)
    if pa.types.is_struct(arrow):
        return pa.struct(
            [pa.field(f.name, portable_type(f.type), f.nullable) for f in arrow.fields]
        )
    return arrow


def wants_choices(spec: JobSpec) -> bool:
    """Whether the ``choices`` column exists: the request may ask for more than one choice.

    ``n`` is part of the request fingerprint, so this is the same for every run that
    writes to one output directory.
    """
    n = spec.request.get("n")
    return n is not None and n != 1


def _check_unique(groups: Sequence[ColumnGroup], keep: Mapping[str, pa.DataType]) -> None:
    seen: set[str] = set()
    for group in groups:
        for field in group.fields:
            if field.name in seen:
                where = "output.keep_columns" if field.name in keep else f"{group.name} columns"
                raise SpecError(
                    f"{where}: {field.name!r} is also the name of a result column; "
                    "rename the input column (or drop it from keep_columns)"
                )
            seen.add(field.name)
