"""The parts are the ledger: what is done, the deduplicated result, and compaction.

A (row_id, sample) may have several rows across parts — an error, then an ok
row from a later run that retried it. Everywhere the rule is the same: the
row that counts is the ok one if there is one, else the latest (part order is
write order, see :mod:`batchchat.results.sink`); which rows lose to another is
found by :mod:`batchchat.results.repeats`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import cast

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from batchchat.errors import InputError, SinkError
from batchchat.results.columns import KEY, STATUS_OK
from batchchat.results.journal import journal_paths, read_journal
from batchchat.results.layout import OutputLayout, fsync_dir, part_number, part_paths, write_part
from batchchat.results.repeats import ORDER, Source, losers, repeated_hashes, winner_masks


def results_dir_of(out_dir: Path | str) -> Path:
    """The results directory of an output directory (the results directory itself is fine too)."""
    path = Path(out_dir)
    results = OutputLayout(path).results
    if results.is_dir():
        return results
    if path.is_dir() and path.name == results.name:
        return path
    raise InputError(f"{path} is not a batchchat output directory (it has no {results.name}/)")


def sources(results_dir: Path) -> list[Source]:
    """The parts and the unfolded journals of a results directory, in write order."""
    numbered: list[tuple[int, Source]] = [(part_number(p), p) for p in part_paths(results_dir)]
    for number, path in journal_paths(results_dir):
        rows = pl.from_arrow(read_journal(path))
        if isinstance(rows, pl.DataFrame) and rows.height:
            numbered.append((number, rows))
    return [source for _, source in sorted(numbered, key=lambda item: item[0])]


def _scan(found: list[Source]) -> pl.LazyFrame:
    paths = [source for source in found if isinstance(source, Path)]
    if len(paths) == len(found) and _one_schema(paths):
        return pl.scan_parquet(paths)
    return pl.concat([_lazy(source) for source in found], how="diagonal_relaxed")


def _lazy(source: Source) -> pl.LazyFrame:
    return pl.scan_parquet(source) if isinstance(source, Path) else source.lazy()


def _one_schema(paths: list[Path]) -> bool:
    """Whether every part has the same columns: parts written by an older batchchat (or
    with other ``keep_columns``) are joined by name, missing columns as nulls."""
    try:
        first = pq.read_schema(paths[0])
        return all(pq.read_schema(path).equals(first) for path in paths[1:])
    except (OSError, pa.ArrowException):
        return True  # a damaged part: the scan itself says which and how, as a SinkError


def scan_results(out_dir: Path | str, *, keys_repeat: bool | None = None) -> pl.LazyFrame:
    """The results as a LazyFrame: one row per (row_id, sample), the ok one if any, else the
    latest. Works on partial, running and killed runs alike, and streams.

    ``keys_repeat=False``: the caller knows that no key repeats (the ledger was just
    compacted), so the check is not made again; otherwise the rows that lose to another
    row of their key are found first (in memory bounded by how many keys repeat) and left
    out of the scan.
    """
    found = sources(results_dir_of(out_dir))
    if not found:
        return pl.LazyFrame(schema={"row_id": pl.String, "sample": pl.Int64, "status": pl.String})
    lost = {} if keys_repeat is False else losers(found)
    if not lost:
        return _scan(found)  # every row is its key's winner (a compacted ledger)
    frames = [_lazy(source) for source in found]
    for index, positions in lost.items():
        frames[index] = (
            frames[index]
            .with_row_index(ORDER)
            .filter(~pl.col(ORDER).is_in(positions.cast(pl.UInt32).implode()))
            .drop(ORDER)
        )
    return pl.concat(frames, how="diagonal_relaxed")


def has_repeated_keys(out_dir: Path | str) -> bool:
    """True when some (row_id, sample) may have several rows (always False once compacted)."""
    found = sources(results_dir_of(out_dir))
    return bool(found) and not repeated_hashes(found).is_empty()


def read_results(out_dir: Path | str) -> pl.DataFrame:
    """The results as a DataFrame (see :func:`scan_results`)."""
    return scan_results(out_dir).collect()


def _sorted_ids(keys: pl.DataFrame) -> dict[int, pl.Series]:
    """sample → the distinct row ids of ``keys`` with that sample, sorted (for binary search).

    Sorting and then dropping neighbours that repeat needs no hash table: ``unique()`` on
    a million keys costs ~300 MB, this ~20.
    """
    by_sample = {}
    for (sample,), group in keys.partition_by("sample", as_dict=True).items():
        ids = group.get_column("row_id").sort()
        by_sample[int(cast(int, sample))] = ids.filter((ids != ids.shift(1)).fill_null(True))
    return by_sample


def _members(ids: pl.Series | None, row_ids: pl.Series) -> pl.Series:
    """For each of ``row_ids``: is it in the sorted ``ids``? Exact: the strings are compared."""
    if ids is None or ids.is_empty():
        return pl.repeat(False, len(row_ids), dtype=pl.Boolean, eager=True)
    at = ids.search_sorted(row_ids, side="left")
    found = ids.gather(at.clip(upper_bound=len(ids) - 1)) == row_ids
    return (at < len(ids)) & found


class ResumeIndex:
    """What earlier runs finished, read from the parts: ``ok`` keys and ``failed`` keys.

    Per sample, the row ids are one sorted string column, looked up a batch at a time by
    binary search in polars, so no Python object per key exists: for 1M finished keys the
    index is built in ~0.15 s for ~120 MB at its peak, where Python sets of the ids took
    ~0.55 s and ~230 MB.
    """

    def __init__(self, ok_keys: pl.DataFrame, error_keys: pl.DataFrame) -> None:
        """(row_id, sample) of every ok row, and of every error row, in every part."""
        #: sample → sorted row ids with an ok row
        self._ok = _sorted_ids(ok_keys)
        errors = _sorted_ids(error_keys)
        #: sample → sorted row ids whose every row is an error (a later ok row wins)
        self._failed = {
            sample: ids.filter(~_members(self._ok.get(sample), ids))
            for sample, ids in errors.items()
        }
        #: keys with an ok row
        self.ok = sum(len(ids) for ids in self._ok.values())
        #: keys whose every row is an error
        self.failed = sum(len(ids) for ids in self._failed.values())

    @classmethod
    def empty(cls) -> ResumeIndex:
        none = pl.DataFrame(schema={"row_id": pl.String, "sample": pl.Int64})
        return cls(none, none)

    def done(self, row_ids: pl.Series, sample: int, *, retry_failed: bool = True) -> pl.Series:
        """Which of ``row_ids`` a run skips for ``sample``: those with an ok row, and with
        ``retry_failed=False`` those whose every row failed too."""
        done = _members(self._ok.get(sample), row_ids)
        if not retry_failed:
            done = done | _members(self._failed.get(sample), row_ids)
        return done


def build_index(results_dir: Path) -> ResumeIndex:
    """The resume index of a results directory (reads only row_id, sample and status)."""
    found = sources(results_dir)
    if not found:
        return ResumeIndex.empty()
    ok = pl.col("status") == STATUS_OK
    try:
        # only the keys, filtered while reading: the status column is never held whole
        ok_keys, error_keys = pl.collect_all(
            [_scan(found).filter(where).select(KEY) for where in (ok, ~ok)],
            engine="streaming",
        )
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise SinkError(f"cannot read the results in {results_dir}: {exc}") from None
    return ResumeIndex(ok_keys, error_keys)


def iter_results(out_dir: Path | str) -> Iterator[pl.DataFrame]:
    """The deduplicated results one part at a time (memory bounded by a part, not the job)."""
    found = sources(results_dir_of(out_dir))
    masks = winner_masks(found)
    for i, source in enumerate(found):
        frame = pl.read_parquet(source) if isinstance(source, Path) else source
        mask = masks.get(i)
        yield frame if mask is None else frame.filter(mask)


def compact_parts(results_dir: Path) -> int:
    """Drop every row that is not its key's winner, rewriting only the parts that hold one.

    Afterwards ``pl.scan_parquet("results/*.parquet")`` equals :func:`read_results`. Each
    part is replaced atomically and a key's winner is never dropped, so a crash halfway
    leaves a consistent ledger. Returns the number of rows dropped.
    """
    paths = part_paths(results_dir)  # not a journal: one left by a full disk waits its turn
    dropped = 0
    for index, mask in winner_masks(list(paths)).items():
        path = paths[index]
        kept = int(mask.sum())
        dropped += len(mask) - kept
        if kept == 0:
            path.unlink()
            fsync_dir(path.parent)
        else:
            write_part(path, pq.read_table(path).filter(mask.to_arrow()))
    return dropped
