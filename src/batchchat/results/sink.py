"""ChatResult → the journal within a moment, then → Parquet parts; a crash loses no part.

Each result is appended to the journal (:mod:`batchchat.results.journal`) as soon as the
event loop has handled the answers that arrived with it (given ``later``, the loop's
``call_later``), but with appends taking at most :data:`APPEND_SHARE` of the time when
answers arrive back to back, and at the latest once :data:`BATCH_ROWS` have gathered or the
oldest has waited :data:`BATCH_S`: a ``kill -9`` loses the requests in flight and the
answers of the last few milliseconds. The journal is
fsynced every :data:`SYNC_S` and folded into a part every ``part_rows`` results or
``part_seconds``. Part numbers only grow, across runs too, so part order is write order —
which is what "the latest row" of a (row_id, sample) means.

When the disk fills, the sink gives up the space it set aside (so the answers of the
requests in flight still fit), raises :class:`DiskFullError` once so the run stops
sending, keeps taking results, and keeps what it could not write in memory to try again
at :meth:`ParquetSink.close`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from batchchat.errors import DiskFullError, ResumeError, SinkError
from batchchat.models import ChatResult
from batchchat.results.encoder import ResultEncoder
from batchchat.results.journal import Journal, Reserve, recover
from batchchat.results.layout import part_number, part_paths, reserve_path, write_part
from batchchat.results.schema import always_columns

#: results gathered before they are appended to the journal, whatever else is due
BATCH_ROWS = 64
#: the longest a result waits in memory before it is appended
BATCH_S = 0.05
#: the share of the time appends may take while answers arrive back to back: an append's
#: cost is mostly fixed, so a pause as long as the last append gathers the answers of the
#: next moment into one table (measured: at 0.05 a kill lost ~30 answers more than those in
#: flight, at 0.5 none more; in a CPU-bound run the BATCH_ROWS cap makes most appends)
APPEND_SHARE = 0.5
#: how often the journal is fsynced (what a power loss may take)
SYNC_S = 1.0


class ParquetSink:
    """Results → journal → a part every ``part_rows`` results or ``part_seconds``."""

    def __init__(
        self,
        results_dir: Path,
        encoder: ResultEncoder,
        *,
        part_rows: int,
        part_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        later: Callable[[float, Callable[[], None]], object] | None = None,
    ) -> None:
        self.results_dir = Path(results_dir)
        self.schema = encoder.schema
        self._encoder = encoder
        self._part_rows = part_rows
        self._part_seconds = part_seconds
        self._clock = clock
        #: runs a callback after a delay, once the event loop has handled what is ready
        #: (None: results wait for BATCH_ROWS or the next tick)
        self._later = later
        #: time.perf_counter() before which the next append would take too large a share
        self._append_ready_at = 0.0
        #: clock time the oldest result not yet appended arrived (None: none waiting)
        self._oldest: float | None = None
        #: clock time the first result of the open journal arrived (0: no journal open),
        #: and of the journal's last fsync
        self._journal_began = 0.0
        self._synced = 0.0
        self._journal: Journal | None = None
        #: tables that could not be written (the disk is full): tried again at close
        self._unwritten: list[pa.Table] = []
        #: the disk filled up: said once (DiskFullError), so that the run stops sending
        self._full = False
        self._said_full = False
        #: what a background tick could not write, said by the next write
        self._tick_error: SinkError | None = None
        self._closed = False
        #: parts this sink wrote
        self.parts_written = 0
        self.results_dir.mkdir(parents=True, exist_ok=True)
        recover(self.results_dir)  # a killed run's journals: folded before anything else
        existing = part_paths(self.results_dir)
        bring_up_to_date(existing, self.schema)
        self._next = part_number(existing[-1]) + 1 if existing else 0
        self._reserve = Reserve(reserve_path(self.results_dir))
        self._reserve.keep()

    def write(self, result: ChatResult) -> None:
        """Take one result; append it to the journal soon (now, when enough gathered)."""
        if self._closed:
            raise SinkError(f"the sink of {self.results_dir} is closed")
        self._encoder.add(result)
        if self._tick_error is not None:
            error, self._tick_error = self._tick_error, None
            raise error
        if self._oldest is None:
            self._oldest = self._clock()
            if self._later is not None:
                wait = self._append_ready_at - time.perf_counter()
                self._later(min(max(wait, 0.0), BATCH_S), self._append_soon)
        if len(self._encoder) >= BATCH_ROWS:
            self._append()
        self._say_if_full()

    def write_table(self, table: pa.Table) -> None:
        """Take results another process encoded (with this sink's schema): they go to the
        journal at once, after what :meth:`write` took before them."""
        if self._closed:
            raise SinkError(f"the sink of {self.results_dir} is closed")
        if not table.schema.equals(self.schema, check_metadata=False):
            changes = "; ".join(schema_changes(table.schema, self.schema))
            raise SinkError(f"results whose columns differ from the job's are refused: {changes}")
        self._append()
        if self._journal is None:
            self._journal_began = self._clock()
        self._unwritten.append(table)
        self._write_unwritten()
        self._say_if_full()

    def write_many(self, results: list[ChatResult]) -> None:
        """Take many results at once (a Batch API file's) and append them in one go: one
        table instead of one per :data:`BATCH_ROWS`, same journal, same durability."""
        if self._closed:
            raise SinkError(f"the sink of {self.results_dir} is closed")
        for result in results:
            self._encoder.add(result)
        if self._oldest is None:
            self._oldest = self._clock()
        self._append()
        self._say_if_full()

    def _append_soon(self) -> None:
        """The answers of one turn of the event loop, appended together (one table, not
        one per answer). Like :meth:`tick`, it raises nothing: the next write does."""
        if self._closed:
            return
        started = time.perf_counter()
        try:
            self._append()
        except SinkError as error:
            self._tick_error = self._tick_error or error
        self._append_ready_at = started + (time.perf_counter() - started) / APPEND_SHARE

    def tick(self) -> None:
        """Called often (every few tens of ms): append, fsync and fold when each is due.

        It raises nothing: what it could not write is raised by the next :meth:`write`
        (so that the run stops sending) or by :meth:`close`.
        """
        try:
            self._tick()
        except SinkError as error:
            self._tick_error = self._tick_error or error

    def _tick(self) -> None:
        now = self._clock()
        if self._oldest is not None and now - self._oldest >= BATCH_S:
            self._append()
        journal = self._journal
        if journal is None:
            return
        if now - self._synced >= SYNC_S:
            self._synced = now
            self._guarded(journal.sync)
        if now - self._journal_began >= self._part_seconds:
            self.flush()
        self._say_if_full()

    def flush(self) -> None:
        """Append what is waiting and fold the journal into its part now."""
        self._append()
        self._fold()
        self._say_if_full()

    def _fold(self) -> None:
        journal, self._journal = self._journal, None
        self._journal_began = 0.0
        if journal is not None:
            self._guarded(journal.fold)  # when it fails, the journal stays for the next run
            self.parts_written += 1

    def close(self) -> None:
        """Write everything taken (what could not be written before too); later writes fail."""
        if self._closed:
            return
        self._closed = True
        try:
            self._append()
            self._fold()
        except DiskFullError:
            lost = sum(table.num_rows for table in self._unwritten)
            if not lost:
                raise
            raise DiskFullError(
                f"the disk holding {self.results_dir} is full: {lost} answer(s) that arrived "
                "last could not be written; everything before them is kept. Free space and "
                "run the job again: it sends only what is not kept."
            ) from None
        finally:
            self._reserve.give_up()
        self._say_if_full()

    def __len__(self) -> int:
        """Results taken and not yet in a part."""
        waiting = len(self._encoder) + sum(int(table.num_rows) for table in self._unwritten)
        return waiting + (self._journal.rows if self._journal is not None else 0)

    # -- writing ----------------------------------------------------------------------------

    def _append(self) -> None:
        if not len(self._encoder):
            return
        if self._journal is None and self._oldest is not None:
            self._journal_began = self._oldest  # a part's time counts from its first result
        self._oldest = None
        self._unwritten.append(self._encoder.take_table())
        self._write_unwritten()

    def _write_unwritten(self) -> None:
        while self._unwritten:
            self._guarded(self._append_first_unwritten)
            if self._journal is not None and self._journal.rows >= self._part_rows:
                self._fold()

    def _append_first_unwritten(self) -> None:
        """Append the oldest unwritten table, or as much of it as the part has room for."""
        journal = self._open_journal()
        table = self._unwritten[0]
        room = self._part_rows - journal.rows
        journal.append(table.slice(0, room))
        if table.num_rows > room:
            self._unwritten[0] = table.slice(room)
        else:
            self._unwritten.pop(0)

    def _open_journal(self) -> Journal:
        if self._journal is None:
            self._journal = Journal(self.results_dir, self._next, self.schema)
            self._next += 1
            self._synced = self._clock()
            if not self._journal_began:
                self._journal_began = self._synced
        return self._journal

    def _guarded(self, write: Callable[[], object]) -> None:
        """Run ``write``; when the disk is full, give up the reserve and try once more (the
        run is told to stop sending either way, by :meth:`_say_if_full`)."""
        try:
            write()
            return
        except DiskFullError:
            self._full = True
            if not self._reserve.give_up():
                raise
        write()

    def _say_if_full(self) -> None:
        if self._full and not self._said_full:
            self._said_full = True
            raise DiskFullError(
                f"the disk holding {self.results_dir} is full: the run stops sending; the "
                "answers that arrive are kept in the space set aside for this"
            )


def bring_up_to_date(parts: list[Path], schema: pa.Schema) -> None:
    """Make the parts already there match ``schema``, or refuse.

    A part written by an older batchchat may lack a column every job now has (it gains
    it, as nulls, rewritten atomically, so ``results/*.parquet`` stays one schema); any
    other difference means the job's output settings changed, which is refused.
    """
    may_add = always_columns()
    for part in parts:
        try:
            existing = pq.read_schema(part)
        except (OSError, pa.ArrowException) as exc:
            raise SinkError(f"cannot read the schema of {part}: {exc}") from None
        if existing.equals(schema, check_metadata=False):
            continue
        if not _only_added(existing, schema, may_add):
            raise ResumeError(_changed_columns(part, existing, schema))
        table = pq.read_table(part)
        columns = [
            table[name] if name in existing.names else pa.nulls(table.num_rows, field.type)
            for name, field in zip(schema.names, schema, strict=True)
        ]
        write_part(part, pa.Table.from_arrays(columns, schema=schema))


def _only_added(old: pa.Schema, new: pa.Schema, may_add: frozenset[str]) -> bool:
    """Whether ``new`` is ``old`` plus some of the columns in ``may_add``."""
    added = set(new.names) - set(old.names)
    same = all(name in new.names and new.field(name).equals(old.field(name)) for name in old.names)
    return same and added <= may_add


def _changed_columns(part: Path, old: pa.Schema, new: pa.Schema) -> str:
    return (
        f"{part.parent} holds parts whose columns differ from what this job writes:\n"
        + "\n".join(f"  {line}" for line in schema_changes(old, new))
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
