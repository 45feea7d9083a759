"""An :class:`InputSource` → bounded batches of rows (polars DataFrames).

Nothing here holds a whole input in memory: Parquet is read row group by row
group (pyarrow), CSV block by block (pyarrow's streaming reader, with the first
file's column types), JSONL ``batch_size`` lines at a time with the types inferred
from the first lines, so every batch of a run has the same columns and types. A
malformed JSONL line (or CSV row) is an error naming file and line, or, with
``input.on_bad_line: skip``, an :class:`InputIssue`.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import orjson
import polars as pl
import pyarrow as pa

from batchchat.errors import InputError
from batchchat.planning.source import (
    InputSource,
    csv_error,
    not_text,
    open_binary,
    open_csv,
    parquet_file,
    text_lines,
)

OnIssue = Callable[["InputIssue"], None]

#: a JSON \\u escape of a UTF-16 surrogate: polars reads a lone one as NUL, orjson refuses it
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


@dataclass(frozen=True, slots=True)
class InputIssue:
    """A row that was skipped (``on_bad_line: skip``): where it is and what is wrong."""

    path: str
    #: 1-based line in the file, when known
    line: int | None
    message: str


def iter_batches(
    source: InputSource, *, on_issue: OnIssue | None = None, columns: list[str] | None = None
) -> Iterator[pl.DataFrame]:
    """The input's rows in order, ``input.batch_size`` at a time, honouring ``input.limit``;
    ``columns`` reads only those."""
    frames = _file_frames(source, on_issue or _ignore, columns, source.files)
    with closing(frames):
        yield from _rebatch(frames, source.spec.batch_size, source.spec.limit)


def read_head(source: InputSource, rows: int) -> pl.DataFrame:
    """The first ``rows`` rows (bad lines skipped silently), for previews and trial renders."""
    if source.rows is not None:
        return source.rows.head(rows).collect()
    lenient = InputSource(
        source.spec.model_copy(update={"on_bad_line": "skip"}),
        source.files,
        source.format,
        source.schema,
    )
    with closing(_file_frames(lenient, _ignore, None, source.files)) as frames:
        first = next(frames, None)
    return first.head(rows) if first is not None else pl.DataFrame(schema=source.schema)


def count_rows(source: InputSource) -> int:
    """How many rows a run reads (``input.limit`` applied); JSONL counts non-blank lines."""
    total, limit = 0, source.spec.limit
    if source.rows is not None:
        total = int(source.rows.select(pl.len()).collect().item())
        return total if limit is None else min(total, limit)
    for path in source.files:
        total += _count_file(path, source, _ignore, exact=False)
        if limit is not None and total >= limit:
            return limit
    return total


def file_row_counts(source: InputSource, *, on_issue: OnIssue | None = None) -> list[int]:
    """How many rows the run reads from each file, exactly, in file order: the position of
    a file's first row is the sum of the counts before it. Files past ``input.limit`` are
    left out (not read); the skipped bad lines go to ``on_issue``."""
    counts: list[int] = []
    total, limit = 0, source.spec.limit
    for path in source.files:
        if limit is not None and total >= limit:
            break
        counts.append(_count_file(path, source, on_issue or _ignore, exact=True))
        total += counts[-1]
    return counts


def _count_file(path: Path, source: InputSource, on_issue: OnIssue, *, exact: bool) -> int:
    """The rows of one file. JSONL counts its non-blank lines, unless ``exact`` and bad
    lines are skipped: then it is parsed as a run parses it, to leave out the same lines."""
    if source.format == "parquet":
        return int(parquet_file(path).metadata.num_rows)
    if source.format == "csv":
        frames = _csv_frames(path, source, on_issue, [source.columns[0]])
        return sum(frame.height for frame in frames)
    if exact and source.spec.on_bad_line == "skip":
        return sum(frame.height for frame in _jsonl_frames(path, source, source.schema, on_issue))
    with open_binary(path) as handle:
        return sum(1 for line in handle if line.strip())


def file_frames(
    source: InputSource, path: Path, columns: list[str] | None = None
) -> Iterator[pl.DataFrame]:
    """The rows of one file of the input in ``input.batch_size`` frames (bad lines skipped
    silently), for the id check and for a reader of one file at a time (the Ray engine)."""
    return _file_frames(source, _ignore, columns, (path,))


def _file_frames(
    source: InputSource,
    on_issue: OnIssue,
    columns: list[str] | None,
    files: tuple[Path, ...],
) -> Generator[pl.DataFrame, None, None]:
    wanted = pl.Schema({c: t for c, t in source.schema.items() if c in (columns or source.schema)})
    if source.rows is not None:
        chosen = source.rows if columns is None else source.rows.select(columns)
        yield from chosen.collect_batches(chunk_size=source.spec.batch_size)
        return
    for path in files:
        if source.format == "parquet":
            frames = _parquet_frames(path, source.spec.batch_size, columns)
        elif source.format == "csv":
            frames = _csv_frames(path, source, on_issue, columns)
        else:
            frames = _jsonl_frames(path, source, wanted, on_issue)
        for frame in frames:
            yield _check_columns(frame, wanted, path)


def _check_columns(frame: pl.DataFrame, expected: pl.Schema, path: Path) -> pl.DataFrame:
    if frame.schema == expected:
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


def _parquet_frames(
    path: Path, batch_size: int, columns: list[str] | None
) -> Iterator[pl.DataFrame]:
    parquet = parquet_file(path)
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


def _csv_frames(
    path: Path, source: InputSource, on_issue: OnIssue, columns: list[str] | None
) -> Iterator[pl.DataFrame]:
    settings = source.spec

    def on_skip(line: int | None, problem: str) -> None:
        on_issue(InputIssue(str(path), line, problem))

    reader, bad_lines = open_csv(
        path, settings, like=source.schema, columns=columns, on_skip=on_skip
    )
    try:
        for batch in reader:
            yield _frame(batch)
    except (OSError, pa.ArrowInvalid, UnicodeDecodeError) as exc:
        line = bad_lines[0] if bad_lines else None
        raise csv_error(path, settings, exc, line) from None
    finally:
        reader.close()


# -- jsonl ----------------------------------------------------------------------------------------


def _jsonl_frames(
    path: Path, source: InputSource, schema: pl.Schema, on_issue: OnIssue
) -> Iterator[pl.DataFrame]:
    first_line = 1
    settings = source.spec
    with open_binary(path) as handle:
        lines = text_lines(handle, settings.encoding)
        while True:
            try:
                chunk = list(islice(lines, settings.batch_size))
            except UnicodeDecodeError:
                raise not_text(path, settings.encoding) from None
            if not chunk:
                return
            yield _parse_jsonl(chunk, first_line, path, source, schema, on_issue)
            first_line += len(chunk)


def _parse_jsonl(
    lines: list[bytes],
    first_line: int,
    path: Path,
    source: InputSource,
    schema: pl.Schema,
    on_issue: OnIssue,
) -> pl.DataFrame:
    data = b"".join(lines)
    if _SURROGATE_ESCAPE.search(data) is None:
        try:
            return pl.read_ndjson(io.BytesIO(data), schema=schema)
        except pl.exceptions.PolarsError:
            pass  # find the offending lines one by one; only this slow path pays for it
    good: list[bytes] = []
    for offset, line in enumerate(lines):
        found = _line_problem(line, schema)
        if found is None:
            good.append(line)
            continue
        column, problem = found
        number = first_line + offset
        if source.spec.on_bad_line == "error":
            where = f"{path}:{number}" + (f":{column}" if column else "")
            raise InputError(f"{where}: {problem} (set input.on_bad_line: skip to skip such lines)")
        shown = f"column {column}: {problem}" if column else problem
        on_issue(InputIssue(str(path), number, shown))
    return pl.read_ndjson(io.BytesIO(b"".join(good)), schema=schema)


def _line_problem(line: bytes, schema: pl.Schema) -> tuple[int | None, str] | None:
    """(1-based column or None, what is wrong) of a JSONL line; None when it is fine."""
    if not line.strip():
        return None
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as exc:
        column = len(line[: exc.start].decode("utf-8", "replace")) + 1
        return column, f"not valid UTF-8 text (byte 0x{line[exc.start]:02x})"
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return exc.colno or None, f"malformed JSON: {exc.msg}"
    if not isinstance(value, dict):
        return None, f"expected a JSON object, got {type(value).__name__}"
    try:
        pl.read_ndjson(io.BytesIO(line), schema=schema)
    except pl.exceptions.PolarsError as exc:
        first = str(exc).splitlines()[0]
        return None, f"a value does not fit the column types of the first lines: {first}"
    return None


def _ignore(issue: InputIssue) -> None:
    """An on_issue that drops issues (previews and id checks report nothing twice)."""
