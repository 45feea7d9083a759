"""Which rows of the ledger do not count: keys with several rows, found in bounded memory.

A (row_id, sample) may have several rows across parts (an error, then the ok row of a
later run that retried it). The row that counts is the ok one if there is one, else the
latest; the others are its losers, which compaction drops and every reader leaves out.

Finding them reads only the key columns, a row group at a time, and holds about
:data:`KEYS_PER_PASS` 64-bit key hashes at once (2 MB) up to 4M rows, in more passes over
the keys for more rows (a little more per pass past :data:`MAX_PASSES` passes). Only the
rows whose hash repeats are then compared by their keys themselves: a hash collision loses
nothing, and what is held is bounded by how many keys repeat, not by the ledger.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import cast

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from batchchat.errors import SinkError
from batchchat.results.columns import KEY, STATUS_OK
from batchchat.results.layout import ROW_GROUP_ROWS

#: where rows are: a part on disk, or the rows of a journal a run has not folded yet (a
#: running or killed run's: read whole, it is small)
Source = Path | pl.DataFrame

#: key hashes held at once by the check (8 bytes each): a ledger with more rows is
#: checked in several passes over its key columns...
KEYS_PER_PASS = 1 << 18
#: ...but in at most this many (each reads every key again): past 4M rows a pass holds
#: more (10M rows: ~625K hashes, 5 MB), so the time stays linear in the rows
MAX_PASSES = 16
#: a row's place in write order, while the winners are chosen
ORDER = "__batchchat_order"
#: added to an ok row's order so that any ok row outranks every error row
_OK_BONUS = 1 << 50


def winner(order: pl.Expr) -> pl.Expr:
    """True for the row that counts for its key: the latest ok row, else the latest row."""
    score = pl.when(pl.col("status") == STATUS_OK).then(order + _OK_BONUS).otherwise(order)
    return score == score.max().over(KEY)


def losers(found: list[Source]) -> dict[int, pl.Series]:
    """Source index → positions (in that source) of its rows that are not their key's
    winner; only sources that hold such a row; empty when no key repeats."""
    return losers_among(found, repeated_hashes(found))


def losers_among(found: list[Source], repeated: pl.Series) -> dict[int, pl.Series]:
    """:func:`losers`, looking only at the rows whose key hash is in ``repeated``; rows whose
    hash is there but whose key is not repeated (a collision) are kept."""
    if repeated.is_empty():
        return {}
    starts = [0]
    for source in found:
        starts.append(starts[-1] + rows_in(source))
    candidates = []
    repeated = repeated.sort()
    for index, position, rows in _key_batches(found, [*KEY, "status"]):
        hit = _in_sorted(repeated, key_hashes(rows))
        if hit.any():
            order = pl.int_range(0, rows.height, dtype=pl.Int64) + position
            candidates.append(
                rows.with_columns(source=pl.lit(index, pl.Int64), position=order)
                .with_columns((pl.col("position") + starts[index]).alias(ORDER))
                .filter(hit)
            )
    if not candidates:
        return {}  # the parts changed under a reader (a run folding a journal): none repeats
    lost = pl.concat(candidates).filter(~winner(pl.col(ORDER)))
    return {
        int(cast(int, index)): group.get_column("position")
        for (index,), group in lost.partition_by("source", as_dict=True).items()
    }


def winner_masks(found: list[Source]) -> dict[int, pl.Series]:
    """For each source that holds a row which does not count: which of its rows count (the
    sources left out keep every row)."""
    masks = {}
    for index, positions in losers(found).items():
        every = pl.repeat(True, rows_in(found[index]), dtype=pl.Boolean, eager=True)
        masks[index] = every.scatter(positions, False)
    return masks


def repeated_hashes(found: list[Source], *, per_pass: int = KEYS_PER_PASS) -> pl.Series:
    """The (distinct) hashes of the (row_id, sample) that more than one row has.

    Each pass keeps the hashes of one residue class modulo the number of passes, sorts
    them and looks for equal neighbours: exact for the hashes, about ``per_pass`` of them
    held at once (more when that would take more than :data:`MAX_PASSES` passes).
    """
    total = sum(rows_in(source) for source in found)
    passes = min(max(1, -(-total // per_pass)), MAX_PASSES)
    repeated = [pl.Series("hash", [], dtype=pl.UInt64)]
    for residue in range(passes):
        kept = [
            hashes if passes == 1 else hashes.filter(hashes % passes == residue)
            for hashes in (key_hashes(rows) for _, _, rows in _key_batches(found, list(KEY)))
        ]
        if not kept:
            break
        ordered = pl.concat(kept).sort()
        del kept
        repeated.append(ordered.filter(ordered == ordered.shift(1)).unique())
    return pl.concat(repeated).rename("hash")


def _in_sorted(ordered: pl.Series, values: pl.Series) -> pl.Series:
    """For each of ``values``: is it in ``ordered`` (sorted)? A binary search each, so a
    long ``ordered`` (many retried rows) is not made into a hash table for every batch."""
    at = ordered.search_sorted(values, side="left")
    found = ordered.gather(at.clip(upper_bound=len(ordered) - 1)) == values
    return (at < len(ordered)) & found


def rows_in(source: Source) -> int:
    """How many rows a source holds (a part's from its footer, without reading it)."""
    if isinstance(source, pl.DataFrame):
        return source.height
    try:
        return int(pq.read_metadata(source).num_rows)
    except (OSError, pa.ArrowException) as exc:
        raise SinkError(f"cannot read the results in {source}: {exc}") from None


def _key_batches(
    found: list[Source], columns: list[str]
) -> Iterator[tuple[int, int, pl.DataFrame]]:
    """(source index, position of the first row in its source, rows) for every source, a
    row group at a time and only ``columns``."""
    for index, source in enumerate(found):
        if isinstance(source, pl.DataFrame):
            yield index, 0, source.select(columns)
            continue
        position = 0
        try:
            batches = pq.ParquetFile(source, pre_buffer=False).iter_batches(
                batch_size=ROW_GROUP_ROWS, columns=columns
            )
            for batch in batches:
                yield index, position, cast(pl.DataFrame, pl.from_arrow(batch))
                position += batch.num_rows
        except (OSError, pa.ArrowException) as exc:
            raise SinkError(f"cannot read the results in {source}: {exc}") from None


def key_hashes(rows: pl.DataFrame) -> pl.Series:
    """A 64-bit hash of each row's (row_id, sample), the same for the same key within one
    process (never stored)."""
    return rows.select(pl.struct(KEY).hash()).to_series()
