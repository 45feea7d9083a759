"""The journal: every result on disk a moment after it arrives, then folded into Parquet parts.

Results are appended to ``results/.journal-NNNNN.arrows``, an Arrow IPC stream with the
results' schema, in small batches (as a write-ahead log is): a kill -9 loses only the few
results not appended yet and the requests in flight. Later the journal is folded into
``part-NNNNN.parquet`` of the same number, written atomically, and only then deleted, so
at every instant each result is in the journal, in its part, or (for an instant) both --
and a part of the same number says the journal was folded.

A journal left by a killed run is read up to its last whole batch (a batch cut by the
kill, or one that does not hold result rows, is where reading stops) and folded by the
next run, under the output directory's lock; readers see it meanwhile.
"""

from __future__ import annotations

import os
import re
from collections.abc import Generator
from contextlib import closing
from itertools import chain
from pathlib import Path

import polars as pl
import pyarrow as pa

from batchchat.errors import SinkError
from batchchat.results.columns import STATUS_ERROR, STATUS_OK
from batchchat.results.layout import fsync_dir, part_path, write_error, write_part_from

_JOURNAL = re.compile(r"^\.journal-(\d+)\.arrows$")
#: space kept free beside the journal, given up when the disk fills so that the answers
#: of the requests in flight, and the last fold, still fit
RESERVE_BYTES = 8 << 20


def journal_path(results_dir: Path, number: int) -> Path:
    return results_dir / f".journal-{number:05d}.arrows"


def journal_paths(results_dir: Path) -> list[tuple[int, Path]]:
    """(number, path) of every journal in a results directory, in number order."""
    if not results_dir.is_dir():
        return []
    found = [
        (int(match.group(1)), Path(entry.path))
        for entry in os.scandir(results_dir)
        if (match := _JOURNAL.match(entry.name))
    ]
    return sorted(found)


class Journal:
    """One journal file being appended to; becomes part ``number`` when folded."""

    def __init__(self, results_dir: Path, number: int, schema: pa.Schema) -> None:
        self.number = number
        self.path = journal_path(results_dir, number)
        #: rows appended so far
        self.rows = 0
        try:
            self._file = open(self.path, "wb")  # noqa: SIM115 -- closed by close()
            self._writer = pa.ipc.new_stream(self._file, schema)
            self._file.flush()
            fsync_dir(results_dir)  # the journal exists from now on, whatever happens
        except OSError as exc:
            raise _sink_error(self.path, exc) from None

    def append(self, table: pa.Table) -> None:
        """Add ``table``'s rows; they are in the file (not yet fsynced) when this returns."""
        try:
            self._writer.write_table(table)
            self._file.flush()
        except OSError as exc:
            raise _sink_error(self.path, exc) from None
        self.rows += table.num_rows

    def sync(self) -> None:
        """Make what was appended survive a power loss, not only a killed process."""
        try:
            os.fsync(self._file.fileno())
        except OSError as exc:
            raise _sink_error(self.path, exc) from None

    def close(self) -> None:
        try:
            self._writer.close()
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            raise _sink_error(self.path, exc) from None
        finally:
            self._file.close()

    def fold(self) -> None:
        """Write the journal's rows as its part, then delete it (closed first if open)."""
        if not self._file.closed:
            self.close()
        fold(self.path, part_path(self.path.parent, self.number), closed_here=True)


def fold(journal: Path, part: Path, *, closed_here: bool = False) -> int:
    """Turn a closed (or killed) journal into its part, then delete it; returns the rows
    written (0 when the part was written already, by a run killed before the delete).

    ``closed_here``: this process appended every batch of the journal and closed it, so
    each batch reads back whole and its rows need no look (only a journal left by a kill
    can end in a torn batch); a look costs ~0.3 ms a batch, and a run appends hundreds.

    Streamed: about one row group is in memory at a time, never the whole journal (a
    50,000-row journal read whole took ~50 MB at once)."""
    rows = 0
    with closing(_whole_batches(journal, mapped=False, trusted=closed_here)) as batches:
        first = next(batches, None)
        if first is not None and not part.exists():
            rows = write_part_from(part, first.schema, chain([first], batches))
    journal.unlink()
    fsync_dir(journal.parent)
    return rows


def recover(results_dir: Path) -> int:
    """Fold the journals a killed run left into parts; returns the rows recovered."""
    return sum(
        fold(path, part_path(results_dir, number)) for number, path in journal_paths(results_dir)
    )


def read_journal(path: Path) -> pa.Table:
    """The whole batches of a journal: a batch cut short by a kill, or one whose rows are
    not results (a torn write), ends it."""
    try:
        schema = pa.ipc.open_stream(pa.memory_map(str(path))).schema
    except (OSError, pa.ArrowInvalid):
        return pa.table({})  # killed before its schema was written: it holds nothing
    return pa.Table.from_batches(list(_whole_batches(path, mapped=True)), schema=schema)


def _whole_batches(
    path: Path, *, mapped: bool, trusted: bool = False
) -> Generator[pa.RecordBatch, None, None]:
    """The journal's batches up to its first cut or torn one (none when killed before its
    schema was written); ``mapped``: memory-mapped, else read into memory a batch at a time;
    ``trusted``: no batch can be torn (see :func:`fold`), so their rows are not looked at."""
    source = pa.memory_map(str(path)) if mapped else pa.OSFile(str(path))
    with source:
        try:
            reader = pa.ipc.open_stream(source)
        except (OSError, pa.ArrowInvalid):
            return
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except (OSError, pa.ArrowInvalid):
                return  # cut by a kill mid-batch
            if not (trusted or _holds_results(batch)):
                return
            yield batch


def _holds_results(batch: pa.RecordBatch) -> bool:
    # through polars: pyarrow builds arrays from Python values by way of pandas (0.3 s)
    rows = pl.from_arrow(batch.select(["row_id", "status"]))
    assert isinstance(rows, pl.DataFrame)
    statuses = rows.get_column("status").is_in([STATUS_OK, STATUS_ERROR])
    return bool(statuses.all()) and rows.get_column("row_id").null_count() == 0


class Reserve:
    """A file of :data:`RESERVE_BYTES` kept beside the journal, removed when the disk fills."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def keep(self) -> None:
        """Set the space aside (DiskFullError when it is not there: nothing sent yet)."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.posix_fallocate(fd, 0, RESERVE_BYTES)
            finally:
                os.close(fd)
        except OSError as exc:
            self.path.unlink(missing_ok=True)
            raise _sink_error(self.path.parent, exc) from None

    def give_up(self) -> bool:
        """Free the space for what must still be written; False when it was gone already."""
        if not self.path.exists():
            return False
        self.path.unlink()
        return True


def _sink_error(path: Path, exc: OSError) -> SinkError:
    return write_error(str(path), exc)
