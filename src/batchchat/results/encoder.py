"""Results → Arrow tables: the sink's hot path.

:class:`ResultEncoder` buffers each result as one tuple of column values (the column
groups of :mod:`batchchat.results.schema` extract them) and hands the buffer out as a table
with exactly the job's schema. Columns of the plain types are built from their buffers
(:mod:`batchchat.results.arrays`); the others, and any column holding a value that is not
exactly of its type, are converted through polars.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl
import pyarrow as pa

from batchchat.errors import SinkError
from batchchat.models import ChatResult
from batchchat.planning.source import polars_type
from batchchat.results.arrays import plain_array
from batchchat.results.schema import ResultColumns
from batchchat.secrets import Redactor, redact_shapes


class ResultEncoder:
    """Buffers results as rows of values and hands them out as Arrow tables (the hot path)."""

    def __init__(
        self,
        columns: ResultColumns,
        *,
        run_id: str | None = None,
        redact: Redactor = redact_shapes,
    ) -> None:
        groups = columns.groups(run_id, redact)
        names = [field.name for group in groups for field in group.fields]
        self.schema = schema = columns.schema
        self._extracts = [group.extract for group in groups]
        self._polars_types = [_polars_type(field.type) for field in schema]
        #: one tuple per buffered result, in schema order; transposed in C by take_table
        self._rows: list[tuple[Any, ...]] = []
        self._width = len(names)

    def add(self, result: ChatResult) -> None:
        """Buffer one result's values."""
        row: tuple[Any, ...] = ()
        for extract in self._extracts:
            row += extract(result)
        if len(row) != self._width:
            raise ValueError(f"a column group gave {len(row)} values for {self._width} columns")
        self._rows.append(row)

    def __len__(self) -> int:
        return len(self._rows)

    def take_table(self) -> pa.Table:
        """The buffered rows as a table with exactly :attr:`schema`; the buffer is cleared."""
        rows, self._rows = self._rows, []
        columns = list(zip(*rows, strict=True)) if rows else [()] * self._width
        arrays = []
        for field, column, target in zip(self.schema, columns, self._polars_types, strict=True):
            array = plain_array(field, column)
            if array is None:
                array = _to_array(field, column, columns[0], target)
            arrays.append(array)
        return pa.Table.from_arrays(arrays, schema=self.schema)


def _polars_type(arrow_type: pa.DataType) -> pl.DataType | None:
    """The polars type holding ``arrow_type`` exactly (None: convert with pyarrow instead)."""
    try:
        return polars_type(arrow_type)
    except (TypeError, ValueError, pl.exceptions.PolarsError):
        return None


#: what a strict polars conversion or an Arrow cast raises for values that do not fit
_CONVERSION_ERRORS = (
    TypeError,
    ValueError,
    OverflowError,
    pl.exceptions.PolarsError,
    pa.ArrowException,
)


def _to_array(
    field: pa.Field,
    values: Sequence[Any],
    row_ids: Sequence[Any],
    polars_type: pl.DataType | None = None,
) -> pa.Array:
    # polars converts Python values as fast as pyarrow does, without pyarrow's pandas
    # import (~0.3 s of every run); values it will not take strictly go the pyarrow way,
    # which also names the row of a value that fits nowhere
    if polars_type is not None:
        try:
            array = pl.Series(field.name, values, dtype=polars_type, strict=True).to_arrow()
            return array if array.type == field.type else array.cast(field.type)
        except _CONVERSION_ERRORS:
            pass
    try:
        return pa.array(values, type=field.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        for row_id, value in zip(row_ids, values, strict=True):
            try:
                pa.array([value], type=field.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                raise SinkError(
                    f"column {field.name!r} ({field.type}) cannot hold the value {value!r:.80} "
                    f"of row {row_id!r}: {exc}"
                ) from None
        raise SinkError(f"column {field.name!r} ({field.type}) cannot be written: {exc}") from None
