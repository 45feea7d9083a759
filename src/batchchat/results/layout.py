"""Every path of an output directory, and the one atomic, durable way to write a file there.

Layout::

    out/job/
      .lock                  flock'ed by the run writing here; holds its pid, host, run id
      manifest.json          request fingerprint, batchchat version, times, run ids
      job.yaml               the resolved spec of the latest run (secrets excluded)
      results/part-NNNNN.parquet   the results, and the resume ledger
      results/.journal-NNNNN.arrows  results on their way into part NNNNN
      results/.reserve       space set aside for when the disk fills
      runs/<run_id>.json     counters of each run
      batches/state.json     batch mode: every shard of the job and its batch, saved before
                             each Batch API call (see batchchat.batchapi.state)
      batches/<shard>.input.jsonl    a shard's Batch API input lines, as uploaded
      batches/<shard>.lines.parquet  which row each of its lines is (ids, hash, kept columns)
      batches/<shard>.<kind>.jsonl   an output or error file, while it is read
      report.json, report.md, report.html   the run report
      upstream.parquet       which upstream answers the rows were made from (chained input)
      superseded/<time>/     what --force moved aside; never deleted by batchchat

No other module spells these names: they ask an :class:`OutputLayout`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from batchchat.errors import DiskFullError, SinkError
from batchchat.results.memory import release_freed_memory

#: temporary files of unfinished writes: hidden, so no glob or dataset reader picks them up
TMP_PREFIX = ".tmp-"
_PART = re.compile(r"^part-(\d+)\.parquet$")
#: how parts are compressed
COMPRESSION = "zstd"
#: rows per row group of a part folded from its journal: what the fold holds in memory at
#: a time. Reading the journal's small batches and encoding them costs ~2.5 KB a row while
#: they are held (8,192 rows: +21 MB for the moment of each fold, 4,096: +10 MB)
ROW_GROUP_ROWS = 4096


class OutputLayout:
    """The paths of one output directory."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def job_yaml(self) -> Path:
        return self.root / "job.yaml"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def reserve(self) -> Path:
        return reserve_path(self.results)

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def upstream(self) -> Path:
        """Which upstream answer each row was made from, when the input is a chained one."""
        return self.root / "upstream.parquet"

    @property
    def superseded(self) -> Path:
        return self.root / "superseded"

    @property
    def batches(self) -> Path:
        """Batch mode's state: the shards of the job and the batches made of them."""
        return self.root / "batches"

    @property
    def batch_state(self) -> Path:
        return self.batches / "state.json"

    def batch_input(self, shard: str) -> Path:
        """A shard's Batch API input lines, exactly as uploaded."""
        return self.batches / f"{shard}.input.jsonl"

    def batch_lines(self, shard: str) -> Path:
        """Which row each line of a shard's input file is."""
        return self.batches / f"{shard}.lines.parquet"

    def batch_download(self, shard: str, kind: str) -> Path:
        """A shard's ``output`` or ``error`` file, while it is read."""
        return self.batches / f"{shard}.{kind}.jsonl"

    def report(self, suffix: str) -> Path:
        """``report.json``, ``report.md`` or ``report.html``."""
        return self.root / f"report.{suffix}"

    def part(self, number: int) -> Path:
        return part_path(self.results, number)

    def run_stats(self, run_id: str) -> Path:
        return self.runs / f"{run_id}.json"

    def input_issues(self, run_id: str) -> Path:
        """The input lines a run skipped (``input.on_bad_line: skip``)."""
        return self.runs / f"{run_id}.input-issues.jsonl"

    def is_output_dir(self) -> bool:
        """Whether batchchat ever wrote here (a manifest, results, run counters or batches)."""
        paths = (self.manifest, self.results, self.runs, self.batches)
        return any(path.exists() for path in paths)

    def written(self) -> list[Path]:
        """What batchchat writes here (what --force moves aside), the manifest last."""
        reports = [self.report(suffix) for suffix in ("json", "md", "html")]
        return [
            self.results,
            self.runs,
            self.batches,
            self.job_yaml,
            *reports,
            self.upstream,
            self.manifest,
        ]

    def problem(self) -> str | None:
        """Why this path cannot be an output directory (None when it can): batchchat writes
        only into a directory of its own, never among files it did not write."""
        root = self.root
        if root.exists() and not root.is_dir():
            return f"output.path: {root} is a file, not a directory"
        if not root.is_dir() or self.is_output_dir():
            return None
        own = {path.name for path in (*self.written(), self.lock, self.superseded)}
        foreign = sorted(entry.name for entry in root.iterdir() if entry.name not in own)
        if not foreign:
            return None
        shown = ", ".join(foreign[:5]) + (", …" if len(foreign) > 5 else "")
        return (
            f"output.path: {root} is not empty and not a batchchat output directory (it holds "
            f"{shown}); batchchat writes only into a directory of its own: choose another"
        )

    def parts(self) -> list[Path]:
        """The finished parts, in write order (part numbers only grow, across runs too)."""
        return part_paths(self.results)


def reserve_path(results_dir: Path) -> Path:
    """Space set aside for when the disk fills (see :mod:`batchchat.results.journal`)."""
    return results_dir / ".reserve"


def part_path(results_dir: Path, number: int) -> Path:
    """Part ``number`` of a results directory."""
    return results_dir / f"part-{number:05d}.parquet"


def part_paths(results_dir: Path) -> list[Path]:
    """The finished parts of a results directory, in write order."""
    if not results_dir.is_dir():
        return []
    numbered = [
        (int(match.group(1)), entry.path)
        for entry in os.scandir(results_dir)
        if (match := _PART.match(entry.name))
    ]
    return [Path(path) for _, path in sorted(numbered)]


def part_number(path: Path) -> int:
    match = _PART.match(path.name)
    if match is None:
        raise ValueError(f"not a part file: {path}")
    return int(match.group(1))


# -- writing ------------------------------------------------------------------------------------


def write_atomically(
    path: Path, content: bytes | Callable[[BinaryIO], None], *, what: str = ""
) -> None:
    """Replace ``path`` with ``content`` so that a crash at any instant leaves the old file or
    the new one, never half of one: temporary file, fsync, rename, directory fsync.

    ``content`` is the bytes, or a function that writes them to the open file; ``what``
    names the file for the error message ("run stats").
    """
    with AtomicFile(path, what=what) as handle:
        if isinstance(content, bytes):
            handle.write(content)
        else:
            content(handle)


class AtomicFile:
    """A file written piece by piece that appears at ``path`` whole, or not at all.

    A context manager yielding the open temporary file: on a clean exit it is fsynced and
    renamed over ``path`` (then the directory is fsynced); on an error it is removed. The
    one atomic write of an output directory, also for files too big to hold in memory.
    """

    def __init__(self, path: Path, *, what: str = "") -> None:
        self.path = path
        self._tmp = path.with_name(f"{TMP_PREFIX}{path.name}")
        self._what = f"{what} {path}" if what else str(path)
        self._handle: BinaryIO | None = None

    def __enter__(self) -> BinaryIO:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self._tmp, "wb")
        except OSError as exc:
            raise write_error(self._what, exc) from None
        return self._handle

    def __exit__(self, exc_type: type[BaseException] | None, exc: object, tb: object) -> None:
        handle, self._handle = self._handle, None
        assert handle is not None
        try:
            if exc_type is None:
                handle.flush()
                os.fsync(handle.fileno())
            handle.close()
            if exc_type is None:
                os.replace(self._tmp, self.path)
                fsync_dir(self.path.parent)
        except BaseException as error:
            self._discard(handle)
            if isinstance(error, OSError):
                raise write_error(self._what, error) from None
            raise
        if exc_type is not None:
            self._discard(handle)
            if isinstance(exc, OSError):
                raise write_error(self._what, exc) from None

    def _discard(self, handle: BinaryIO) -> None:
        with contextlib.suppress(OSError):
            handle.close()
            self._tmp.unlink(missing_ok=True)


def write_error(what: str, exc: OSError) -> SinkError:
    """The SinkError for a failed write of ``what``; a DiskFullError when space ran out."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"the disk holding {what} is full ({exc.strerror})")
    return SinkError(f"cannot write {what}: {exc.strerror or exc}")


def write_part(path: Path, table: pa.Table) -> None:
    """Write one Parquet part of the results atomically."""
    write_atomically(path, lambda handle: pq.write_table(table, handle, compression=COMPRESSION))
    release_freed_memory()  # what the encoding used, given back rather than kept all run


def write_part_from(path: Path, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> int:
    """Write one Parquet part atomically from ``batches``, holding about one row group of
    them at a time; returns the rows written."""
    written = 0

    def write(handle: BinaryIO) -> None:
        nonlocal written
        with pq.ParquetWriter(handle, schema, compression=COMPRESSION) as writer:
            for group in _row_groups(batches):
                writer.write_table(group, row_group_size=group.num_rows)
                written += group.num_rows

    write_atomically(path, write)
    release_freed_memory()
    return written


def _row_groups(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.Table]:
    gathered: list[pa.RecordBatch] = []
    rows = 0
    for batch in batches:
        gathered.append(batch)
        rows += batch.num_rows
        if rows >= ROW_GROUP_ROWS:
            yield pa.Table.from_batches(gathered)
            gathered, rows = [], 0
    if gathered:
        yield pa.Table.from_batches(gathered)


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_temporaries(directory: Path) -> int:
    """Delete the half-written temporaries a crash left in ``directory``; returns how many."""
    if not directory.is_dir():
        return 0
    removed = 0
    for entry in os.scandir(directory):
        if entry.name.startswith(TMP_PREFIX):
            Path(entry.path).unlink(missing_ok=True)
            removed += 1
    return removed
