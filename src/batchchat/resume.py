"""The parts are the ledger: what is done, the deduplicated result, and compaction.

A (row_id, sample) may have several rows across parts — an error, then an ok
row from a later run that retried it. Everywhere the rule is the same: the
row that counts is the ok one if there is one, else the latest (part order is
write order, see :mod:`batchchat.sink`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import polars as pl
import pyarrow.parquet as pq

from batchchat.errors import InputError, SinkError
from batchchat.results import KEY, STATUS_OK
from batchchat.sink import fsync_dir, part_paths, write_atomically

RESULTS_DIR = "results"
_ORDER = "__batchchat_order"
#: added to an ok row's order so that any ok row outranks every error row
_OK_BONUS = 1 << 50
#: integer row ids up to this many times the count of ids use a byte map instead of a set
_DENSE_FACTOR = 8


def results_dir_of(out_dir: Path | str) -> Path:
    """The results directory of an output directory (the results directory itself is fine too)."""
    path = Path(out_dir)
    if (path / RESULTS_DIR).is_dir():
        return path / RESULTS_DIR
    if path.is_dir() and path.name == RESULTS_DIR:
        return path
    raise InputError(f"{path} is not a batchchat output directory (it has no {RESULTS_DIR}/)")


def _winner(order: pl.Expr) -> pl.Expr:
    """True for the row that counts for its key: the latest ok row, else the latest row."""
    score = pl.when(pl.col("status") == STATUS_OK).then(order + _OK_BONUS).otherwise(order)
    return score == score.max().over(KEY)


def scan_results(out_dir: Path | str) -> pl.LazyFrame:
    """The results as a LazyFrame: one row per (row_id, sample), the ok one if any, else the
    latest. Works on partial and interrupted runs alike."""
    paths = part_paths(results_dir_of(out_dir))
    if not paths:
        return pl.LazyFrame(schema={"row_id": pl.String, "sample": pl.Int64, "status": pl.String})
    if not _keys_may_repeat(paths):
        # every row is its key's winner (a compacted ledger): a plain scan, which streams
        return pl.scan_parquet(paths)
    frame = pl.scan_parquet(paths, row_index_name=_ORDER)
    return frame.filter(_winner(pl.col(_ORDER).cast(pl.Int64))).drop(_ORDER)


def has_repeated_keys(out_dir: Path | str) -> bool:
    """True when some (row_id, sample) may have several rows (always False once compacted)."""
    paths = part_paths(results_dir_of(out_dir))
    return bool(paths) and _keys_may_repeat(paths)


def read_results(out_dir: Path | str) -> pl.DataFrame:
    """The results as a DataFrame (see :func:`scan_results`)."""
    return scan_results(out_dir).collect()


def _read_keys(paths: list[Path]) -> pl.DataFrame:
    try:
        return pl.scan_parquet(paths).select(*KEY, "status").collect()
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise SinkError(f"cannot read the result parts in {paths[0].parent}: {exc}") from None


def _keys_may_repeat(paths: list[Path]) -> bool:
    """False when no (row_id, sample) has two rows in the parts; True when one may.

    Reads a 64-bit hash of every key in the streaming engine and sorts them: 16 bytes per
    row at the peak instead of every key. A repeated hash is a repeated key or, rarely, a
    collision; either way the callers then decide exactly, from the keys themselves.
    """
    try:
        hashes = (
            pl.scan_parquet(paths)
            .select(pl.struct(KEY).hash())
            .collect(engine="streaming")
            .to_series()
        )
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise SinkError(f"cannot read the result parts in {paths[0].parent}: {exc}") from None
    if len(hashes) < 2:
        return False
    ordered = hashes.sort()
    return bool((ordered.slice(1) == ordered.slice(0, len(ordered) - 1)).any())


class _DenseIds:
    """Canonical decimal row ids as a byte map: 1 MB per million ids, where a set of the same
    strings takes ~60 MB. Row ids are the row position when the input has no id column, so
    this is the common case."""

    __slots__ = ("_bits", "count")

    def __init__(self, numbers: pl.Series) -> None:
        size = cast(int, numbers.max()) + 1
        bits = pl.zeros(size, pl.UInt8, eager=True).scatter(numbers, 1)
        array = bits.to_arrow()
        #: byte n is 1 when row id str(n) is in the set
        self._bits = array.buffers()[1].to_pybytes()[array.offset : array.offset + size]
        self.count = cast(int, bits.sum())

    def __contains__(self, row_id: object) -> bool:
        # only canonical decimals ("7", not "07", "+7" or "٧") were stored as numbers
        if not isinstance(row_id, str) or not (row_id.isascii() and row_id.isdigit()):
            return False
        if row_id[0] == "0" and len(row_id) > 1:
            return False
        number = int(row_id)
        return number < len(self._bits) and self._bits[number] == 1

    def __len__(self) -> int:
        return self.count


_RowIds = frozenset[str] | _DenseIds


def _row_ids(ids: pl.Series) -> _RowIds:
    """The row ids of one sample, as a byte map when they are dense decimals, else a set."""
    if len(ids) and ids.str.contains(r"^(?:0|[1-9][0-9]{0,15})$").all():
        numbers = ids.cast(pl.Int64)
        if cast(int, numbers.max()) < _DENSE_FACTOR * len(ids) + 4096:
            return _DenseIds(numbers)
    return frozenset(ids.to_list())


def _by_sample(keys: pl.DataFrame) -> dict[int, _RowIds]:
    return {
        int(cast(int, sample)): _row_ids(group.get_column("row_id"))
        for (sample,), group in keys.partition_by("sample", as_dict=True).items()
    }


class ResumeIndex:
    """What earlier runs finished, read from the parts: ``ok`` keys and ``failed`` keys.

    Lookups are by sample, then row id, in structures built from whole columns (no
    per-row Python work at build time beyond one set of strings for non-numeric ids).
    """

    def __init__(self, keys: pl.DataFrame) -> None:
        """``keys``: row_id, sample, status of every row in every part."""
        ok = keys.filter(pl.col("status") == STATUS_OK).select(KEY)
        failed = keys.filter(pl.col("status") != STATUS_OK).select(KEY).unique()
        if failed.height:
            failed = failed.join(ok, on=list(KEY), how="anti")
        #: sample → row ids with an ok row
        self._ok = _by_sample(ok)
        #: sample → row ids whose every row is an error
        self._failed = _by_sample(failed)
        #: keys with an ok row
        self.ok = sum(len(ids) for ids in self._ok.values())
        #: keys whose every row is an error
        self.failed = failed.height

    @classmethod
    def empty(cls) -> ResumeIndex:
        return cls(
            pl.DataFrame(schema={"row_id": pl.String, "sample": pl.Int64, "status": pl.String})
        )

    def is_done(self, row_id: str, sample: int) -> bool:
        """True when the key already has an ok row."""
        ids = self._ok.get(sample)
        return ids is not None and row_id in ids

    def is_failed(self, row_id: str, sample: int) -> bool:
        ids = self._failed.get(sample)
        return ids is not None and row_id in ids

    def skip_predicate(self, retry_failed: bool) -> Callable[[str, int], bool]:
        """What a run skips: ok keys, and with ``retry_failed=False`` failed keys too."""
        if retry_failed:
            return self.is_done
        ok, failed = self._ok, self._failed

        def skip(row_id: str, sample: int) -> bool:
            ids = ok.get(sample)
            if ids is not None and row_id in ids:
                return True
            ids = failed.get(sample)
            return ids is not None and row_id in ids

        return skip


def build_index(results_dir: Path) -> ResumeIndex:
    """The resume index of a results directory (reads only row_id, sample and status)."""
    paths = part_paths(results_dir)
    return ResumeIndex(_read_keys(paths)) if paths else ResumeIndex.empty()


def iter_results(out_dir: Path | str) -> Iterator[pl.DataFrame]:
    """The deduplicated results one part at a time (memory bounded by a part, not the job)."""
    paths = part_paths(results_dir_of(out_dir))
    masks = _winner_masks(paths)
    for i, path in enumerate(paths):
        frame = pl.read_parquet(path)
        yield frame if masks is None else frame.filter(masks[i])


def compact_parts(results_dir: Path) -> int:
    """Drop every row that is not its key's winner, rewriting only the parts that hold one.

    Afterwards ``pl.scan_parquet("results/*.parquet")`` equals :func:`read_results`. Each
    part is replaced atomically and a key's winner is never dropped, so a crash halfway
    leaves a consistent ledger. Returns the number of rows dropped.
    """
    paths = part_paths(results_dir)
    masks = _winner_masks(paths)
    if masks is None:
        return 0
    dropped = 0
    for path, mask in zip(paths, masks, strict=True):
        kept = int(mask.sum())
        if kept == len(mask):
            continue
        dropped += len(mask) - kept
        if kept == 0:
            path.unlink()
            fsync_dir(path.parent)
        else:
            write_atomically(path, pq.read_table(path).filter(mask.to_arrow()))
    return dropped


def _winner_masks(paths: list[Path]) -> list[pl.Series] | None:
    """For each part, which of its rows count; None when no key repeats (all of them do)."""
    if not paths or not _keys_may_repeat(paths):
        return None
    keys = _read_keys(paths)
    if keys.select(pl.struct(KEY).n_unique()).item() == keys.height:
        return None  # the hashes collided: no key repeats after all
    # the order must be a column: an expression like int_range(len()) would restart per window
    ordered = keys.with_row_index(_ORDER)
    mask = ordered.select(_winner(pl.col(_ORDER).cast(pl.Int64))).to_series()
    masks, offset = [], 0
    for path in paths:
        size = pq.read_metadata(path).num_rows
        masks.append(mask.slice(offset, size))
        offset += size
    return masks
