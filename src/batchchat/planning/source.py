"""The input of a job, resolved once: its files, their format, and the columns they share.

:func:`open_source` finds the files (a file, a glob or a directory), judges their format,
reads the columns of every file without reading any whole, and refuses files whose
columns differ from the first one's. Everything that reads rows takes the resulting
:class:`InputSource`, so a run globs its input and infers its schema once.

Text must be text: a CSV or JSONL byte that is not valid in ``input.encoding``
(UTF-8 unless the spec says otherwise) is an :class:`InputError` naming file, line and
column, never a ``binary`` column whose values reach a template as ``b'...'``.
"""

from __future__ import annotations

import codecs
import glob
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import BinaryIO, Literal

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from batchchat.errors import InputError
from batchchat.spec import InputSpec, JobSpec

#: "results": rows another stage read already (a batchchat output directory's results)
Format = Literal["parquet", "jsonl", "csv", "results"]

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
CSV_BLOCK_BYTES = 1 << 20


@dataclass(frozen=True)
class InputSource:
    """A job's input, resolved: what to read and the columns every file has."""

    #: the spec's ``input:`` settings
    spec: InputSpec
    #: the files, in reading order
    files: tuple[Path, ...]
    format: Format
    #: the columns and their types (the first file's; every file has the same columns)
    schema: pl.Schema
    #: the rows themselves, when they are a table read by another stage (format
    #: "results": a batchchat output directory, whose reading planning knows nothing of)
    rows: pl.LazyFrame | None = None

    @property
    def columns(self) -> list[str]:
        return list(self.schema)

    def describe(self) -> str:
        """The input as people name it: the file, or the pattern and how many files."""
        if self.rows is not None:
            return f"{self.files[0]} (batchchat results)"
        if len(self.files) == 1:
            return str(self.files[0])
        return f"{self.spec.path} ({len(self.files)} files)"


def input_source(spec: JobSpec, rows: pl.LazyFrame | None = None) -> InputSource:
    """The input of ``spec`` (``input.path`` resolved against the spec's directory); with
    ``rows``, the table read from there by the caller (a batchchat output directory)."""
    root = spec.resolve_path(spec.input.path)
    if rows is not None:
        return table_source(spec.input, root, rows)
    return open_source(spec.input, root)


def table_source(settings: InputSpec, origin: Path, rows: pl.LazyFrame) -> InputSource:
    """An input whose rows are already a table (``origin`` names it in messages)."""
    return InputSource(settings, (origin,), "results", rows.collect_schema(), rows)


def open_source(settings: InputSpec, root: Path) -> InputSource:
    """Find the files under ``root``, and read and compare their columns."""
    files = _find_files(settings, root)
    formats = {_format_of(settings, path) for path in files}
    if len(formats) > 1:
        raise InputError(
            f"input.path: {settings.path} matches files of several formats "
            f"({', '.join(sorted(formats))}); narrow the path or set input.format"
        )
    fmt = formats.pop()
    schema = file_schema(files[0], fmt, settings)
    if not schema:
        raise InputError(
            f"{files[0]}: no JSON object on its first lines: the file is empty, or not JSON "
            "Lines (one object per line) in input.encoding"
            f" ({settings.encoding}; a UTF-16 file needs input.encoding: utf-16)"
        )
    for path in files[1:]:
        _check_same_columns(path, file_schema(path, fmt, settings, like=schema), schema, fmt)
    return InputSource(settings, tuple(files), fmt, schema)


# -- files and formats --------------------------------------------------------------------------


def _find_files(settings: InputSpec, root: Path) -> list[Path]:
    raw = settings.path
    if root.is_dir():
        found = sorted(root.rglob("*"))
        files = [p for p in found if p.is_file() and _is_data_file(p, settings)]
    elif any(ch in str(root) for ch in "*?["):
        found = [Path(p) for p in sorted(glob.glob(str(root), recursive=True))]
        files = [p for p in found if p.is_file() and not _is_hidden(p)]
    elif root.is_file():
        files = [root]
    elif root.exists():
        raise InputError(f"input.path: {raw} is not a regular file (resolved to {root})")
    else:
        raise InputError(f"input.path: {raw} does not exist (resolved to {root})")
    if not files:
        raise InputError(f"input.path: no input files match {raw} (resolved to {root})")
    return files


def _format_of(settings: InputSpec, path: Path) -> Format:
    if settings.format is not None:
        return settings.format
    found = _SUFFIXES.get(path.suffix.lower())
    if found is None:
        known = ", ".join(sorted(_SUFFIXES))
        raise InputError(f"{path}: unknown input format (suffixes: {known}); set input.format")
    return found


def _is_data_file(path: Path, settings: InputSpec) -> bool:
    if _is_hidden(path):
        return False
    return settings.format is not None or path.suffix.lower() in _SUFFIXES


def _is_hidden(path: Path) -> bool:
    # _SUCCESS, .crc and friends that Spark and Hadoop leave next to data files
    return path.name.startswith((".", "_"))


# -- schemas --------------------------------------------------------------------------------------


def file_schema(
    path: Path, fmt: Format, settings: InputSpec, *, like: pl.Schema | None = None
) -> pl.Schema:
    """The columns of one file, read from its head (``like``: the types to read CSV as)."""
    if fmt == "parquet":
        arrow = parquet_file(path).schema_arrow
    elif fmt == "csv":
        arrow = _csv_schema(path, settings, like)
    else:
        return _jsonl_schema(path, settings)
    return pl.Schema({field.name: polars_type(field.type) for field in arrow})


def polars_type(arrow_type: pa.DataType) -> pl.DataType:
    """The polars type a column of ``arrow_type`` is read as (without importing pandas)."""
    series = pl.from_arrow(pa.nulls(0, arrow_type))
    assert isinstance(series, pl.Series)
    return series.dtype


def _check_same_columns(path: Path, got: pl.Schema, want: pl.Schema, fmt: Format) -> None:
    # CSV and JSONL are read with the first file's types, so only their names must agree
    same = got == want if fmt == "parquet" else list(got) == list(want)
    if same:
        return
    missing = [name for name in want if name not in got]
    extra = [name for name in got if name not in want]
    detail = []
    if missing:
        detail.append(f"it lacks {', '.join(missing)}")
    if extra:
        detail.append(f"it has {', '.join(extra)} in addition")
    if not detail:
        show = ", ".join(f"{name}: {dtype}" for name, dtype in got.items())
        detail.append(f"its columns are {show}")
    raise InputError(
        f"{path}: its columns differ from the first input file's ({'; '.join(detail)}); "
        "every input file must have the same columns"
    )


def parquet_file(path: Path) -> pq.ParquetFile:
    try:
        # pre_buffer keeps what it read for the life of the file: memory would grow with it
        return pq.ParquetFile(path, pre_buffer=False)
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputError(f"{path}: not a readable Parquet file: {exc}") from None


def _csv_schema(path: Path, settings: InputSpec, like: pl.Schema | None) -> pa.Schema:
    # bad rows are reported when the rows are read, not here (where they would be twice)
    reader, _ = open_csv(path, settings, like=like, on_skip=lambda line, problem: None)
    try:
        schema: pa.Schema = reader.schema
    finally:
        reader.close()
    binary = [field.name for field in schema if pa.types.is_binary(field.type)]
    if binary:
        raise not_text(path, settings.encoding, binary[0])
    return schema


def open_csv(
    path: Path,
    settings: InputSpec,
    *,
    like: pl.Schema | None = None,
    columns: list[str] | None = None,
    on_skip: Callable[[int | None, str], None] | None = None,
) -> tuple[pa_csv.CSVStreamingReader, list[int | None]]:
    """A streaming CSV reader, and the list it fills with the lines of malformed rows.

    A malformed row is an error (its line in the message) unless ``input.on_bad_line:
    skip``, when it goes to ``on_skip(line, problem)``. Text columns must decode in
    ``input.encoding``.
    """
    bad_lines: list[int | None] = []

    def on_invalid(row: pa_csv.InvalidRow) -> str:
        if settings.on_bad_line == "error" or on_skip is None:
            bad_lines.append(row.number)
            return "error"
        on_skip(row.number, f"expected {row.expected_columns} columns, got {row.actual_columns}")
        return "skip"

    types = {name: _arrow_type(dtype) for name, dtype in (like or {}).items()}
    if settings.id_column and settings.id_column not in types:
        types[settings.id_column] = pa.string()  # "007" must not become the integer 7
    try:
        reader = pa_csv.open_csv(
            path,
            read_options=pa_csv.ReadOptions(
                # single-threaded parsing is what makes pyarrow report line numbers
                use_threads=False,
                block_size=CSV_BLOCK_BYTES,
                encoding=settings.encoding,
            ),
            parse_options=pa_csv.ParseOptions(invalid_row_handler=on_invalid),
            convert_options=pa_csv.ConvertOptions(column_types=types, include_columns=columns),
        )
    except (OSError, pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise csv_error(path, settings, exc, bad_lines[0] if bad_lines else None) from None
    return reader, bad_lines


def _arrow_type(dtype: pl.DataType) -> pa.DataType:
    return pl.Series([], dtype=dtype).to_arrow().type


def csv_error(
    path: Path, settings: InputSpec, exc: Exception, line: int | None = None
) -> InputError:
    """The InputError for a CSV that pyarrow could not read."""
    if "invalid UTF8" in str(exc) or isinstance(exc, UnicodeDecodeError):
        return not_text(path, settings.encoding)
    where = f":{line}" if line is not None else ""
    return InputError(f"{path}{where}: malformed CSV: {exc} (set input.on_bad_line: skip to skip)")


# -- text that is not text ----------------------------------------------------------------------


def not_text(path: Path, encoding: str, column: str | None = None) -> InputError:
    """The error for a file holding bytes that are not valid ``encoding``: where the first is."""
    with open(path, "rb") as handle:
        found = first_undecodable(handle, encoding)
    where = f"{path}:{found[0]}:{found[1]}" if found else str(path)
    byte = f" (byte 0x{found[2]:02x})" if found else ""
    named = f" in column '{column}'" if column else ""
    hint = (
        "set input.encoding to the file's encoding (for example latin-1 or cp1252)"
        if codecs.lookup(encoding).name == "utf-8"
        else "check input.encoding"
    )
    return InputError(f"{where}: not valid {encoding} text{named}{byte}; {hint}")


def first_undecodable(handle: BinaryIO, encoding: str) -> tuple[int, int, int] | None:
    """(line, column, byte) of the first byte that is not valid ``encoding``, 1-based."""
    decoder = codecs.getincrementaldecoder(encoding)()
    for number, line in enumerate(handle, start=1):
        try:
            decoder.decode(line)
        except UnicodeDecodeError as exc:
            column = len(line[: exc.start].decode(encoding, "replace")) + 1
            return number, column, line[exc.start]
    return None


def text_lines(handle: BinaryIO, encoding: str) -> Iterator[bytes]:
    """The lines of ``handle`` as UTF-8 (transcoded when ``encoding`` is another)."""
    if codecs.lookup(encoding).name == "utf-8":
        yield from handle
        return
    reader = codecs.getreader(encoding)(handle)
    for line in reader:
        yield line.encode("utf-8")


def _jsonl_schema(path: Path, settings: InputSpec) -> pl.Schema:
    """Types inferred from the first lines; malformed ones are left to the reader to report."""
    try:
        with open_binary(path) as handle:
            sample = list(islice(text_lines(handle, settings.encoding), SCHEMA_SAMPLE_LINES))
    except UnicodeDecodeError:
        raise not_text(path, settings.encoding) from None
    lines = [line for line in sample if _is_object_line(line)]
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


def open_binary(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
