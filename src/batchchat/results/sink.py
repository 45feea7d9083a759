"""ChatResult → Parquet parts, written so that a crash at any instant leaves only whole parts.

A part is ``part-NNNNN.parquet`` in the results directory. It is written under a
hidden temporary name in the same directory, fsynced, renamed into place, and
the directory is fsynced: a reader (or a resumed run) sees a part completely or
not at all. Numbers only grow, across runs too, so part order is write order —
which is what "the latest row" of a (row_id, sample) means.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from batchchat.errors import ResumeError, SinkError
from batchchat.models import ChatResult
from batchchat.results.encoder import ResultEncoder
from batchchat.results.layout import part_number, part_path, part_paths, write_atomically

_COMPRESSION = "zstd"


def write_part(path: Path, table: pa.Table) -> None:
    """Write one Parquet part atomically (see :func:`batchchat.results.layout.write_atomically`)."""
    write_atomically(path, lambda handle: pq.write_table(table, handle, compression=_COMPRESSION))


class ParquetSink:
    """Buffers results and writes a part every ``part_rows`` results or ``part_seconds``."""

    def __init__(
        self,
        results_dir: Path,
        schema: pa.Schema,
        encoder: ResultEncoder,
        *,
        part_rows: int,
        part_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.results_dir = Path(results_dir)
        self.schema = schema
        self._encoder = encoder
        self._part_rows = part_rows
        self._part_seconds = part_seconds
        self._clock = clock
        #: clock reading when the oldest buffered result arrived (None: buffer empty)
        self._oldest: float | None = None
        self._closed = False
        #: parts this sink wrote
        self.parts_written = 0
        self.results_dir.mkdir(parents=True, exist_ok=True)
        existing = part_paths(self.results_dir)
        if existing:
            check_compatible(existing[-1], schema)
        self._next = part_number(existing[-1]) + 1 if existing else 0

    def write(self, result: ChatResult) -> None:
        """Buffer one result; write a part when enough rows or time have gathered."""
        if self._closed:
            raise SinkError(f"the sink of {self.results_dir} is closed")
        self._encoder.add(result)
        if self._oldest is None:
            self._oldest = self._clock()
        if len(self._encoder) >= self._part_rows:
            self.flush()
        else:
            self.flush_if_due()

    def flush_if_due(self) -> bool:
        """Write a part if the oldest buffered result has waited ``part_seconds``."""
        if self._oldest is None or self._clock() - self._oldest < self._part_seconds:
            return False
        self.flush()
        return True

    def flush(self) -> None:
        """Write a part now if anything is buffered."""
        if not len(self._encoder):
            return
        table = self._encoder.take_table()
        self._oldest = None
        write_part(part_path(self.results_dir, self._next), table)
        self._next += 1
        self.parts_written += 1

    def close(self) -> None:
        """Flush what is buffered; later writes are an error."""
        if not self._closed:
            self.flush()
            self._closed = True

    def __len__(self) -> int:
        """Results buffered and not yet in a part."""
        return len(self._encoder)


def check_compatible(part: Path, schema: pa.Schema) -> None:
    """Refuse to add parts whose columns differ from the parts already there."""
    try:
        existing = pq.read_schema(part)
    except (OSError, pa.ArrowException) as exc:
        raise SinkError(f"cannot read the schema of {part}: {exc}") from None
    if existing.equals(schema, check_metadata=False):
        return
    raise ResumeError(
        f"{part.parent} holds parts whose columns differ from what this job writes:\n"
        + "\n".join(f"  {line}" for line in schema_changes(existing, schema))
        + "\nThe output settings (keep_columns, parse, keep_raw) or the input's column types "
        "changed. Re-run with --new-output DIR to write elsewhere, or --force to start over "
        "here (the old results are moved aside, not deleted)."
    )


def schema_changes(old: pa.Schema, new: pa.Schema) -> list[str]:
    """Readable differences between two schemas, column by column."""
    old_types = {field.name: field.type for field in old}
    new_types = {field.name: field.type for field in new}
    lines = [f"+ {name} ({new_types[name]})" for name in new_types if name not in old_types]
    lines += [f"- {name} ({old_types[name]})" for name in old_types if name not in new_types]
    lines += [
        f"~ {name}: {old_types[name]} → {new_types[name]}"
        for name in new_types
        if name in old_types and old_types[name] != new_types[name]
    ]
    return lines or ["(the same columns, in a different order or nullability)"]
