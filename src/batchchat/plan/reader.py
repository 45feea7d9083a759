"""Parquet / JSONL / CSV → bounded batches of rows (polars DataFrames).

Nothing here holds a whole input in memory: Parquet is read row group by row
group (pyarrow), CSV block by block (pyarrow's streaming reader, one schema
inferred from the first block), JSONL ``batch_size`` lines at a time with one
schema inferred from the first lines, so every batch of a run has the same
columns and types. A malformed JSONL line (or CSV row) is an error naming file
and line, or, with ``input.on_bad_line: skip``, an :class:`InputIssue`.
"""

from __future__ import annotations

import glob
import io
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Literal

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from batchchat.errors import InputError
from batchchat.spec import JobSpec

Format = Literal["parquet", "jsonl", "csv"]
OnIssue = Callable[["InputIssue"], None]

_SUFFIXES: dict[str, Format] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
}
#: JSONL lines read to infer the column types of the whole input
SCHEMA_SAMPLE_LINES = 10_000
#: bytes of CSV parsed at a time (pyarrow infers the column types from the first block)
_CSV_BLOCK_BYTES = 1 << 20
#: how many duplicate ids an error shows
_SHOWN_DUPLICATES = 5


@dataclass(frozen=True, slots=True)
class InputIssue:
    """A row that was skipped (``on_bad_line: skip``): where it is and what is wrong."""

    path: str
    #: 1-based line in the file, when known
    line: int | None
    message: str


# -- files and formats --------------------------------------------------------------------------


def input_files(spec: JobSpec) -> list[Path]:
    """The files of the input, in reading order: a file, a glob, or a directory (recursive)."""
    raw = spec.input.path
    root = spec.resolve_path(raw)
    if root.is_dir():
        files = [p for p in sorted(root.rglob("*")) if p.is_file() and _is_data_file(p, spec)]
    elif any(ch in str(root) for ch in "*?["):
        found = sorted(glob.glob(str(root), recursive=True))
        files = [Path(p) for p in found if Path(p).is_file() and not _is_hidden(Path(p))]
    elif root.is_file():
        files = [root]
    else:
        raise InputError(f"input.path: {raw} does not exist (resolved to {root})")
    if not files:
        raise InputError(f"input.path: no input files match {raw} (resolved to {root})")
    formats = {input_format(spec, p) for p in files}
    if len(formats) > 1:
        raise InputError(
            f"input.path: {raw} matches files of several formats ({', '.join(sorted(formats))}); "
            "narrow the path or set input.format"
        )
    return files


def input_format(spec: JobSpec, path: Path) -> Format:
    """The format of one input file: ``input.format``, or judged by its suffix."""
    if spec.input.format is not None:
        return spec.input.format
    found = _SUFFIXES.get(path.suffix.lower())
    if found is None:
        known = ", ".join(sorted(_SUFFIXES))
        raise InputError(f"{path}: unknown input format (suffixes: {known}); set input.format")
    return found


def _is_data_file(path: Path, spec: JobSpec) -> bool:
    if _is_hidden(path):
        return False
    return spec.input.format is not None or path.suffix.lower() in _SUFFIXES


def _is_hidden(path: Path) -> bool:
    # _SUCCESS, .crc and friends that Spark and Hadoop leave next to data files
    return path.name.startswith((".", "_"))


# -- schema ---------------------------------------------------------------------------------------


def read_schema(spec: JobSpec) -> dict[str, pl.DataType]:
    """The input's columns and types, from the first file, without reading it whole."""
    first = input_files(spec)[0]
    fmt = input_format(spec, first)
    if fmt == "parquet":
        arrow_schema = _parquet_file(first).schema_arrow
    elif fmt == "csv":
        reader, _ = _open_csv(first, spec, _ignore)
        arrow_schema = reader.schema
        reader.close()
    else:
        return dict(_jsonl_schema(first, spec))
    # column by column: Schema.empty_table() would import pandas (a quarter of a second)
    return {field.name: polars_type(field.type) for field in arrow_schema}


def polars_type(arrow_type: pa.DataType) -> pl.DataType:
    """The polars type a column of ``arrow_type`` is read as (without importing pandas)."""
    series = pl.from_arrow(pa.nulls(0, arrow_type))
    assert isinstance(series, pl.Series)
    return series.dtype


def _jsonl_schema(path: Path, spec: JobSpec) -> pl.Schema:
    """Types inferred from the first lines; malformed ones are left to the reader to report."""
    with _open(path) as fh:
        lines = [line for line in islice(fh, SCHEMA_SAMPLE_LINES) if _is_object_line(line)]
    if not lines:
        return pl.Schema()
    frame = pl.read_ndjson(io.BytesIO(b"".join(lines)), infer_schema_length=None)
    # a column that is null in every sampled line may hold text further down
    return pl.Schema({c: pl.String if t == pl.Null else t for c, t in frame.schema.items()})


def _is_object_line(line: bytes) -> bool:
    try:
        return isinstance(orjson.loads(line), dict)
    except orjson.JSONDecodeError:
        return False


# -- batches --------------------------------------------------------------------------------------


def iter_batches(
    spec: JobSpec, *, on_issue: OnIssue | None = None, check_ids: bool = True
) -> Iterator[pl.DataFrame]:
    """The input's rows in order, ``input.batch_size`` at a time, honouring ``input.limit``.

    Duplicate (or missing) ids are checked before the first batch is returned, unless
    the caller did so already (``check_ids=False``).
    """
    if check_ids:
        check_unique_ids(spec)
    yield from iter_raw_batches(spec, on_issue=on_issue)


def iter_raw_batches(
    spec: JobSpec, *, on_issue: OnIssue | None = None, columns: list[str] | None = None
) -> Iterator[pl.DataFrame]:
    """Like :func:`iter_batches` without the id check; ``columns`` reads only those."""
    with closing(_iter_file_frames(spec, on_issue or _ignore, columns)) as frames:
        yield from _rebatch(frames, spec.input.batch_size, spec.input.limit)


def read_head(spec: JobSpec, rows: int) -> pl.DataFrame:
    """The first ``rows`` rows (bad lines skipped silently), for previews and trial renders."""
    head = spec.model_copy(update={"input": spec.input.model_copy(update={"on_bad_line": "skip"})})
    with closing(_iter_file_frames(head, _ignore, None)) as frames:
        first = next(frames, None)
    return first.head(rows) if first is not None else pl.DataFrame(schema=read_schema(spec))


def count_rows(spec: JobSpec) -> int:
    """How many rows a run reads (``input.limit`` applied); JSONL counts non-blank lines."""
    total = 0
    for path in input_files(spec):
        fmt = input_format(spec, path)
        if fmt == "parquet":
            total += _parquet_file(path).metadata.num_rows
        elif fmt == "csv":
            total += sum(frame.height for frame in _csv_frames(path, spec, _ignore, None))
        else:
            with _open(path) as fh:
                total += sum(1 for line in fh if line.strip())
        if spec.input.limit is not None and total >= spec.input.limit:
            return spec.input.limit
    return total


def _iter_file_frames(
    spec: JobSpec,
    on_issue: OnIssue,
    columns: list[str] | None,
    files: list[Path] | None = None,
) -> Generator[pl.DataFrame, None, None]:
    schema = read_schema(spec)
    for path in files or input_files(spec):
        fmt = input_format(spec, path)
        if fmt == "parquet":
            frames = _parquet_frames(path, spec.input.batch_size, columns)
        elif fmt == "csv":
            frames = _csv_frames(path, spec, on_issue, columns)
        else:
            wanted = {c: schema[c] for c in columns or schema if c in schema}
            frames = _jsonl_frames(path, spec, pl.Schema(wanted), on_issue)
        for frame in frames:
            yield _check_columns(frame, schema, columns, path)


def _check_columns(
    frame: pl.DataFrame, schema: dict[str, pl.DataType], columns: list[str] | None, path: Path
) -> pl.DataFrame:
    expected = {c: schema[c] for c in columns or schema if c in schema}
    if dict(frame.schema) == expected:
        return frame
    got = ", ".join(f"{c}: {t}" for c, t in frame.schema.items())
    want = ", ".join(f"{c}: {t}" for c, t in expected.items())
    raise InputError(
        f"{path}: its columns differ from the first input file's\n  got:      {got}\n"
        f"  expected: {want}"
    )


def _rebatch(
    frames: Iterator[pl.DataFrame], size: int, limit: int | None
) -> Iterator[pl.DataFrame]:
    """Frames of exactly ``size`` rows (the last may be shorter), stopping after ``limit``."""
    pending: list[pl.DataFrame] = []
    buffered = 0
    remaining = limit if limit is not None else -1
    for frame in frames:
        if remaining >= 0:
            frame = frame.head(remaining)
            remaining -= frame.height
        pending.append(frame)
        buffered += frame.height
        while buffered >= size:
            whole = pl.concat(pending, rechunk=False)
            yield whole.head(size)
            rest = whole.slice(size)
            pending, buffered = [rest], rest.height
        if remaining == 0:
            break
    if buffered:
        yield pl.concat(pending)


# -- parquet --------------------------------------------------------------------------------------


def _parquet_file(path: Path) -> pq.ParquetFile:
    try:
        # pre_buffer keeps what it read for the life of the file: memory would grow with it
        return pq.ParquetFile(path, pre_buffer=False)
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputError(f"{path}: not a readable Parquet file: {exc}") from None


def _parquet_frames(
    path: Path, batch_size: int, columns: list[str] | None
) -> Iterator[pl.DataFrame]:
    parquet = _parquet_file(path)
    try:
        for batch in parquet.iter_batches(batch_size=batch_size, columns=columns):
            yield _frame(batch)
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputError(f"{path}: cannot read Parquet: {exc}") from None
    finally:
        parquet.close()


def _frame(data: pa.Table | pa.RecordBatch) -> pl.DataFrame:
    frame = pl.from_arrow(data)
    assert isinstance(frame, pl.DataFrame)
    return frame


# -- csv ------------------------------------------------------------------------------------------


def _open_csv(
    path: Path, spec: JobSpec, on_issue: OnIssue, columns: list[str] | None = None
) -> tuple[pa_csv.CSVStreamingReader, list[int | None]]:
    """A streaming reader, and the list its error-mode handler fills with bad line numbers."""
    bad_lines: list[int | None] = []

    def on_invalid(row: pa_csv.InvalidRow) -> str:
        if spec.input.on_bad_line == "error":
            bad_lines.append(row.number)
            return "error"
        problem = f"expected {row.expected_columns} columns, got {row.actual_columns}"
        on_issue(InputIssue(str(path), row.number, problem))
        return "skip"

    # ids stay text: "007" must not become the integer 7
    id_column = spec.input.id_column
    types = {id_column: pa.string()} if id_column else {}
    try:
        reader = pa_csv.open_csv(
            path,
            # single-threaded parsing is what makes pyarrow report line numbers
            read_options=pa_csv.ReadOptions(use_threads=False, block_size=_CSV_BLOCK_BYTES),
            parse_options=pa_csv.ParseOptions(invalid_row_handler=on_invalid),
            convert_options=pa_csv.ConvertOptions(column_types=types, include_columns=columns),
        )
    except (OSError, pa.ArrowInvalid) as exc:
        raise _csv_error(path, exc, bad_lines) from None
    return reader, bad_lines


def _csv_frames(
    path: Path, spec: JobSpec, on_issue: OnIssue, columns: list[str] | None
) -> Iterator[pl.DataFrame]:
    reader, bad_lines = _open_csv(path, spec, on_issue, columns)
    try:
        for batch in reader:
            yield _frame(batch)
    except (OSError, pa.ArrowInvalid) as exc:
        raise _csv_error(path, exc, bad_lines) from None
    finally:
        reader.close()


def _csv_error(path: Path, exc: Exception, bad_lines: list[int | None]) -> InputError:
    line = f":{bad_lines[0]}" if bad_lines and bad_lines[0] is not None else ""
    return InputError(f"{path}{line}: malformed CSV: {exc} (set input.on_bad_line: skip to skip)")


# -- jsonl ----------------------------------------------------------------------------------------


def _open(path: Path) -> io.BufferedReader:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None


def _jsonl_frames(
    path: Path, spec: JobSpec, schema: pl.Schema, on_issue: OnIssue
) -> Iterator[pl.DataFrame]:
    first_line = 1
    with _open(path) as fh:
        while chunk := list(islice(fh, spec.input.batch_size)):
            yield _parse_jsonl(chunk, first_line, path, spec, schema, on_issue)
            first_line += len(chunk)


def _parse_jsonl(
    lines: list[bytes],
    first_line: int,
    path: Path,
    spec: JobSpec,
    schema: pl.Schema,
    on_issue: OnIssue,
) -> pl.DataFrame:
    try:
        return pl.read_ndjson(io.BytesIO(b"".join(lines)), schema=schema)
    except pl.exceptions.PolarsError:
        pass  # find the offending lines one by one; only this slow path pays for it
    good: list[bytes] = []
    for offset, line in enumerate(lines):
        problem = _line_problem(line, schema)
        if problem is None:
            good.append(line)
            continue
        where = f"{path}:{first_line + offset}"
        if spec.input.on_bad_line == "error":
            raise InputError(f"{where}: {problem} (set input.on_bad_line: skip to skip such lines)")
        on_issue(InputIssue(str(path), first_line + offset, problem))
    return pl.read_ndjson(io.BytesIO(b"".join(good)), schema=schema)


def _line_problem(line: bytes, schema: pl.Schema) -> str | None:
    if not line.strip():
        return None
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return f"malformed JSON: {exc}"
    if not isinstance(value, dict):
        return f"expected a JSON object, got {type(value).__name__}"
    try:
        pl.read_ndjson(io.BytesIO(line), schema=schema)
    except pl.exceptions.PolarsError as exc:
        first = str(exc).splitlines()[0]
        return f"a value does not fit the column types of the first lines: {first}"
    return None


# -- ids ------------------------------------------------------------------------------------------


def check_unique_ids(spec: JobSpec) -> None:
    """Raise InputError when the id column has a duplicate or an empty value (within limit).

    One streaming pass collects a 64-bit hash of every id, sorted to find repeats: 16
    bytes per row at the peak, whatever the ids' length, and no hash table. Only when a
    hash repeats are the ids of those hashes grouped for real (a repeat may be a
    collision of distinct ids), and where the duplicates occur is looked up for the few
    that are shown.
    """
    id_column = spec.input.id_column
    if id_column is None:
        return
    files = input_files(spec)
    ids = _id_frame(spec, id_column, files)
    if spec.input.limit is not None:
        ids = ids.head(spec.input.limit)
    id_hash = pl.col(id_column).hash()
    nulls, hashes = pl.collect_all(
        [ids.filter(pl.col(id_column).is_null()).head(1), ids.select(id_hash)],
        engine="streaming",
    )
    if nulls.height:
        where = nulls.row(0, named=True)
        raise InputError(
            f"{files[where['file']]}: row {where['row']}: the id column '{id_column}' is empty; "
            "every row needs an id (or drop input.id_column to use row positions)"
        )
    repeated = _repeated(hashes.to_series())
    del hashes
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
        raise InputError(_describe_duplicates(dups, places, id_column, files))


def _repeated(values: pl.Series) -> pl.Series:
    """The values that occur more than once."""
    if len(values) < 2:
        return values.clear()
    ordered = values.sort()
    later = ordered.slice(1)
    return later.filter(later == ordered.slice(0, len(ordered) - 1)).unique()


def _id_frame(spec: JobSpec, id_column: str, files: list[Path]) -> pl.LazyFrame:
    """(id as text, file number, 1-based row in the file, position) of every input row."""
    schema = read_schema(spec)
    if id_column not in schema:
        raise InputError(f"input.id_column: the input has no column '{id_column}'")
    parts: list[pl.LazyFrame] = []
    for number, path in enumerate(files):
        if input_format(spec, path) == "parquet":
            ids = pl.scan_parquet(path).select(id_column)
        else:
            frames = list(_iter_file_frames(spec, _ignore, [id_column], [path]))
            empty = pl.LazyFrame(schema={id_column: pl.String})
            ids = pl.concat(frames).lazy() if frames else empty
        parts.append(
            ids.select(pl.col(id_column).cast(pl.String))
            .with_row_index("row", offset=1)
            .with_columns(file=pl.lit(number, dtype=pl.UInt32))
        )
    return pl.concat(parts).with_row_index("pos")


def _describe_duplicates(
    dups: pl.DataFrame, places: pl.DataFrame, id_column: str, files: list[Path]
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


def _ignore(issue: InputIssue) -> None:
    """An on_issue that drops issues (previews and id checks report nothing twice)."""
