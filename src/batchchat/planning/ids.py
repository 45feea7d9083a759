"""Row ids: every row of the input has one, it is not empty, and no two rows share it.

Streaming passes collect a 64-bit hash of every id, sorted to find repeats: 16 bytes a
hash at the peak, whatever the ids' length, and no hash table. An input of more than
:data:`HASHES_PER_PASS` rows is checked in several passes over its id column, each keeping
the hashes of one residue class (a 10M-row input held 280 MB at once in one pass). Only
when a hash repeats are the ids of those hashes grouped for real (a repeat may be a
collision of distinct ids), and where the duplicates occur is looked up for the few that
are shown.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from batchchat.errors import InputError
from batchchat.planning.reader import file_frames
from batchchat.planning.source import InputSource

#: how many duplicate ids an error shows
_SHOWN_DUPLICATES = 5
#: id hashes a pass of the check holds (8 bytes each, twice while sorted: 16 MB)...
HASHES_PER_PASS = 1 << 20
#: ...in at most this many passes (each reads the id column again): past 32M rows a pass
#: holds more, so that the time stays linear in the rows
MAX_PASSES = 32


def check_unique_ids(source: InputSource, *, hashes_per_pass: int = HASHES_PER_PASS) -> None:
    """Raise InputError when the id column has a duplicate, null or empty value (within limit)."""
    id_column = source.spec.id_column
    if id_column is None:
        return
    ids = _id_frame(source, id_column)
    if source.spec.limit is not None:
        ids = ids.head(source.spec.limit)
    id_hash = pl.col(id_column).hash()
    empty = pl.col(id_column).is_null() | (pl.col(id_column).str.len_bytes() == 0)
    rows = ids.select(pl.len()).collect(engine="streaming").item()
    passes = min(max(1, -(-rows // hashes_per_pass)), MAX_PASSES)
    if passes == 1:  # one read of the column for both
        blanks, hashes = pl.collect_all(
            [ids.filter(empty).head(1), ids.select(id_hash)], engine="streaming"
        )
        repeated = _repeated(hashes.to_series())
        del hashes
    else:
        blanks = ids.filter(empty).head(1).collect(engine="streaming")
        repeated = pl.concat(
            [_repeated_in_class(ids, id_hash, passes, residue) for residue in range(passes)]
        )
    if blanks.height:
        where = blanks.row(0, named=True)
        what = "empty" if where[id_column] is None else "an empty string"
        raise InputError(
            f"{source.files[where['file']]}: row {where['row']}: the id column '{id_column}' "
            f"is {what}; every row needs an id (or drop input.id_column to use row positions)"
        )
    if repeated.is_empty():
        return
    candidates = ids.filter(id_hash.is_in(repeated.implode()))
    dups = (
        candidates.group_by(id_column)
        .agg(pl.len().alias("count"), pl.col("pos").min())
        .filter(pl.col("count") > 1)
        .sort("pos")
        .head(_SHOWN_DUPLICATES)
        .collect(engine="streaming")
    )
    if dups.height:
        shown = dups.get_column(id_column).implode()
        places = (
            candidates.filter(pl.col(id_column).is_in(shown))
            .sort("pos")
            .group_by(id_column, maintain_order=True)
            .head(3)
            .collect(engine="streaming")
        )
        raise InputError(_describe_duplicates(dups, places, id_column, source.files))


def _repeated_in_class(ids: pl.LazyFrame, id_hash: pl.Expr, passes: int, residue: int) -> pl.Series:
    """The repeated id hashes that are ``residue`` modulo ``passes`` (one read of the ids)."""
    kept = ids.select(id_hash.alias("hash")).filter(pl.col("hash") % passes == residue)
    return _repeated(kept.collect(engine="streaming").to_series())


def _repeated(values: pl.Series) -> pl.Series:
    """The values that occur more than once."""
    if len(values) < 2:
        return values.clear()
    ordered = values.sort()
    later = ordered.slice(1)
    return later.filter(later == ordered.slice(0, len(ordered) - 1)).unique()


def _id_frame(source: InputSource, id_column: str) -> pl.LazyFrame:
    """(id as text, file number, 1-based row in the file, position) of every input row."""
    if id_column not in source.schema:
        raise InputError(f"input.id_column: the input has no column '{id_column}'")
    if source.rows is not None:
        return (
            source.rows.select(pl.col(id_column).cast(pl.String))
            .with_row_index("row", offset=1)
            .with_columns(file=pl.lit(0, dtype=pl.UInt32))
            .with_row_index("pos")
        )
    parts: list[pl.LazyFrame] = []
    for number, path in enumerate(source.files):
        if source.format == "parquet":
            ids = pl.scan_parquet(path).select(id_column)
        else:
            frames = list(file_frames(source, path, [id_column]))
            empty = pl.LazyFrame(schema={id_column: pl.String})
            ids = pl.concat(frames).lazy() if frames else empty
        parts.append(
            ids.select(pl.col(id_column).cast(pl.String))
            .with_row_index("row", offset=1)
            .with_columns(file=pl.lit(number, dtype=pl.UInt32))
        )
    return pl.concat(parts).with_row_index("pos")


def _describe_duplicates(
    dups: pl.DataFrame, places: pl.DataFrame, id_column: str, files: tuple[Path, ...]
) -> str:
    lines = [f"duplicate ids in column '{id_column}' (each id must name one row):"]
    for item in dups.iter_rows(named=True):
        rows = places.filter(pl.col(id_column) == item[id_column])
        where = ", ".join(
            f"{files[f]} row {r}" for f, r in zip(rows["file"], rows["row"], strict=True)
        )
        more = f" and {item['count'] - 3} more" if item["count"] > 3 else ""
        lines.append(f"  {item[id_column]!r} occurs {item['count']} times: {where}{more}")
    return "\n".join(lines)
