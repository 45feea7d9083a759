"""Reading inputs: every format, globs and directories, limits, bad lines, duplicate ids."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from batchchat.errors import InputError
from batchchat.planning import reader
from batchchat.planning.ids import check_unique_ids as check_source_ids
from batchchat.planning.reader import InputIssue
from batchchat.planning.source import SCHEMA_SAMPLE_LINES, input_source
from batchchat.spec import JobSpec, load_spec

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples"

FRAME = pl.DataFrame(
    {
        "id": [f"r{i}" for i in range(25)],
        "text": [f"review number {i}, with a comma" for i in range(25)],
        "rating": [i % 5 + 1 for i in range(25)],
        "score": [i / 4 for i in range(25)],
        "ok": [i % 2 == 0 for i in range(25)],
    }
)


def make_spec(path: Path | str, **input_fields: Any) -> JobSpec:
    return load_spec(
        {
            "input": {"path": str(path), **input_fields},
            "request": {"model": "m", "messages": [{"role": "user", "content": "x"}]},
        }
    )


# the reader's functions take the resolved input; these read a spec's, as a run does once


def read_schema(spec: JobSpec) -> dict[str, pl.DataType]:
    return dict(input_source(spec).schema)


def input_files(spec: JobSpec) -> list[Path]:
    return list(input_source(spec).files)


def count_rows(spec: JobSpec) -> int:
    return reader.count_rows(input_source(spec))


def iter_batches(spec: JobSpec, **kw: Any) -> Iterator[pl.DataFrame]:
    source = input_source(spec)
    check_source_ids(source)
    return reader.iter_batches(source, **kw)


def read_head(spec: JobSpec, rows: int) -> pl.DataFrame:
    return reader.read_head(input_source(spec), rows)


def check_unique_ids(spec: JobSpec) -> None:
    check_source_ids(input_source(spec))


def write(frame: pl.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.write_parquet(path)
    elif path.suffix == ".csv":
        frame.write_csv(path)
    else:
        frame.write_ndjson(path)
    return path


def read_all(spec: JobSpec, issues: list[InputIssue] | None = None) -> pl.DataFrame:
    frames = list(iter_batches(spec, on_issue=None if issues is None else issues.append))
    return pl.concat(frames) if frames else pl.DataFrame()


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl", ".ndjson", ".csv"])
def test_every_format_reads_the_same_rows_and_types(tmp_path: Path, suffix: str) -> None:
    spec = make_spec(write(FRAME, tmp_path / f"in{suffix}"), id_column="id")
    assert read_schema(spec) == dict(FRAME.schema)
    assert_frame_equal(read_all(spec), FRAME)
    assert count_rows(spec) == 25


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl", ".csv"])
@pytest.mark.parametrize(("batch_size", "limit"), [(7, None), (7, 10), (100, 3), (5, 25)])
def test_batches_are_bounded_and_honour_the_limit(
    tmp_path: Path, suffix: str, batch_size: int, limit: int | None
) -> None:
    spec = make_spec(write(FRAME, tmp_path / f"in{suffix}"), batch_size=batch_size, limit=limit)
    frames = list(iter_batches(spec))
    wanted = FRAME.height if limit is None else limit
    assert [f.height for f in frames[:-1]] == [batch_size] * (len(frames) - 1)
    assert 0 < frames[-1].height <= batch_size
    assert_frame_equal(pl.concat(frames), FRAME.head(wanted))
    assert count_rows(spec) == wanted


def test_the_sample_files_agree(tmp_path: Path) -> None:
    jsonl = read_all(make_spec(SAMPLES / "reviews.jsonl", id_column="id"))
    parquet = read_all(make_spec(SAMPLES / "reviews.parquet", id_column="id"))
    assert jsonl.height == 200
    assert_frame_equal(jsonl, parquet)


def test_glob_and_directory_inputs_read_files_in_name_order(tmp_path: Path) -> None:
    data = tmp_path / "parts"
    write(FRAME.slice(10, 15), data / "b.parquet")
    write(FRAME.slice(0, 10), data / "a.parquet")
    write(FRAME.head(1), data / "_SUCCESS.parquet")  # Spark's markers are not data
    (data / "notes.txt").write_text("not data")
    for spec in (make_spec(data), make_spec(data / "*.parquet"), make_spec("parts", limit=12)):
        if spec.input.path == "parts":
            spec = spec.model_copy(update={"base_dir": str(tmp_path)})
        expected = FRAME.head(spec.input.limit or 25)
        assert_frame_equal(read_all(spec), expected)
    assert [p.name for p in input_files(make_spec(data))] == ["a.parquet", "b.parquet"]


def test_a_limit_stops_before_the_next_file(tmp_path: Path) -> None:
    write(FRAME.head(5), tmp_path / "a.jsonl")
    # its columns are checked up front, from its first lines; its rows are never read
    write(FRAME.head(1), tmp_path / "b.jsonl")
    with open(tmp_path / "b.jsonl", "a") as handle:
        handle.write("this line is never read\n")
    assert read_all(make_spec(tmp_path / "*.jsonl", limit=5)).height == 5


def test_format_override_reads_an_unusual_suffix(tmp_path: Path) -> None:
    path = tmp_path / "export.txt"
    FRAME.write_ndjson(path)
    assert_frame_equal(read_all(make_spec(path, format="jsonl")), FRAME)


@pytest.mark.parametrize(
    ("setup", "path", "fragment"),
    [
        (lambda d: None, "nope.jsonl", "does not exist"),
        (lambda d: None, "*.parquet", "no input files match"),
        (lambda d: (d / "x.json").write_text("{}"), "x.json", "unknown input format"),
        (
            lambda d: (write(FRAME, d / "a.csv"), write(FRAME, d / "b.jsonl")),
            "*",
            "several formats (csv, jsonl)",
        ),
        (lambda d: (d / "bad.parquet").write_bytes(b"nope"), "bad.parquet", "not a readable"),
    ],
)
def test_unusable_inputs_are_explained(
    tmp_path: Path, setup: Any, path: str, fragment: str
) -> None:
    setup(tmp_path)
    with pytest.raises(InputError) as caught:
        read_all(make_spec(tmp_path / path))
    assert fragment in str(caught.value)


def test_files_with_other_columns_are_an_error(tmp_path: Path) -> None:
    write(FRAME, tmp_path / "a.parquet")
    write(FRAME.rename({"text": "body"}), tmp_path / "b.parquet")
    with pytest.raises(InputError, match=r"b\.parquet: its columns differ"):
        read_all(make_spec(tmp_path / "*.parquet"))


BAD_JSONL = (
    '{"id": "a", "n": 1}\n'
    "\n"
    '{"id": "b", "n": 2}\n'
    '{"id": "c", "n": \n'  # line 4: cut short
    "[1, 2]\n"  # line 5: not an object
    '{"id": "e", "n": 5}\n'
)


@pytest.mark.parametrize("batch_size", [2, 100])
def test_a_malformed_jsonl_line_stops_the_run_naming_file_and_line(
    tmp_path: Path, batch_size: int
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(BAD_JSONL)
    with pytest.raises(InputError) as caught:
        read_all(make_spec(path, batch_size=batch_size))
    assert re.search(rf"{re.escape(str(path))}:4:\d+: malformed JSON", str(caught.value))
    assert "on_bad_line: skip" in str(caught.value)


@pytest.mark.parametrize("batch_size", [1, 3, 100])
def test_skip_mode_records_bad_lines_and_keeps_the_rest(tmp_path: Path, batch_size: int) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(BAD_JSONL)
    issues: list[InputIssue] = []
    frame = read_all(make_spec(path, on_bad_line="skip", batch_size=batch_size), issues)
    assert frame.to_dicts() == [
        {"id": "a", "n": 1},
        {"id": "b", "n": 2},
        {"id": "e", "n": 5},
    ]
    assert [(i.path, i.line) for i in issues] == [(str(path), 4), (str(path), 5)]
    assert "malformed JSON" in issues[0].message
    assert "expected a JSON object, got list" in issues[1].message


def test_a_value_of_another_type_after_the_sampled_lines_is_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    good = "".join(f'{{"id": "r{i}", "n": {i}}}\n' for i in range(SCHEMA_SAMPLE_LINES))
    path.write_text(good + '{"id": "x", "n": "three"}\n{"id": "y", "n": 7}\n')
    line = SCHEMA_SAMPLE_LINES + 1
    with pytest.raises(InputError, match=rf"in\.jsonl:{line}: a value does not fit the column"):
        read_all(make_spec(path))
    issues: list[InputIssue] = []
    frame = read_all(make_spec(path, on_bad_line="skip"), issues)
    assert frame.height == SCHEMA_SAMPLE_LINES + 1
    assert frame["n"].dtype == pl.Int64 and frame["n"][-1] == 7
    assert [issue.line for issue in issues] == [line]


def test_jsonl_types_come_from_the_first_lines_and_nulls_become_text(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"a": 1, "note": null}\n{"a": 2.5, "note": null, "extra": [1]}\n')
    assert read_schema(make_spec(path)) == {
        "a": pl.Float64,
        "note": pl.String,
        "extra": pl.List(pl.Int64),
    }


CSV = (
    "ticket_id,opened,channel,total,urgent,body\n"
    '00017,2024-05-01 09:00:00,email,12.5,true,"Refund, please"\n'
    '00018,2024-05-02 10:30:00,chat,7,false,"Line one\nline two ""quoted"""\n'
)


def test_csv_types_are_inferred_and_ids_stay_text(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(CSV)
    spec = make_spec(path, id_column="ticket_id")
    assert read_schema(spec) == {
        "ticket_id": pl.String,
        "opened": pl.Datetime("ms"),
        "channel": pl.String,
        "total": pl.Float64,
        "urgent": pl.Boolean,
        "body": pl.String,
    }
    rows = read_all(spec).to_dicts()
    assert [r["ticket_id"] for r in rows] == ["00017", "00018"]
    assert rows[1]["body"] == 'Line one\nline two "quoted"'
    assert rows[0]["total"] == 12.5


def test_a_malformed_csv_row_is_an_error_with_its_line_or_skipped(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("id,text\n1,a\n2,b,extra\n3,c\n")
    with pytest.raises(InputError, match=r"t\.csv:3: malformed CSV"):
        read_all(make_spec(path))
    issues: list[InputIssue] = []
    frame = read_all(make_spec(path, on_bad_line="skip"), issues)
    assert frame["text"].to_list() == ["a", "c"]
    assert issues == [InputIssue(str(path), 3, "expected 2 columns, got 3")]


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl", ".csv"])
def test_duplicate_ids_are_an_error_naming_the_id_and_its_rows(tmp_path: Path, suffix: str) -> None:
    frame = FRAME.with_columns(
        id=pl.when(pl.col("rating") == 5).then(pl.lit("dup")).otherwise("id")
    )
    frame = frame.with_columns(id=pl.when(pl.col("id") == "id").then(FRAME["id"]).otherwise("id"))
    path = write(frame, tmp_path / f"in{suffix}")
    with pytest.raises(InputError) as caught:
        next(iter_batches(make_spec(path, id_column="id")))
    message = str(caught.value)
    assert "duplicate ids in column 'id'" in message
    assert f"'dup' occurs 5 times: {path} row 5, {path} row 10, {path} row 15 and 2 more" in message


def test_duplicates_across_files_and_beyond_the_limit(tmp_path: Path) -> None:
    write(FRAME.head(5), tmp_path / "a.jsonl")
    write(FRAME.slice(4, 3), tmp_path / "b.jsonl")  # r4 again, as the first row of b
    spec = make_spec(tmp_path / "*.jsonl", id_column="id")
    with pytest.raises(
        InputError, match=r"'r4' occurs 2 times: .*a\.jsonl row 5, .*b\.jsonl row 1"
    ):
        check_unique_ids(spec)
    check_unique_ids(make_spec(tmp_path / "*.jsonl", id_column="id", limit=5))  # not reached


def test_ids_that_only_look_alike_are_not_duplicates_and_a_late_one_is_found(
    tmp_path: Path,
) -> None:
    ids = [str(i) for i in range(5000)] + ["01", "1 ", " 1", "1.0"]
    path = write(pl.DataFrame({"id": ids}), tmp_path / "unique.parquet")
    check_unique_ids(make_spec(path, id_column="id"))
    path = write(pl.DataFrame({"id": [*ids, "4321"]}), tmp_path / "late.parquet")
    with pytest.raises(InputError, match=r"'4321' occurs 2 times: .* row 4322, .* row 5005$"):
        check_unique_ids(make_spec(path, id_column="id"))


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_a_check_in_many_passes_finds_what_one_pass_finds(tmp_path: Path, suffix: str) -> None:
    # 64 hashes a pass: 80 passes over 5,005 ids (capped at MAX_PASSES), each keeping one
    # residue class of the hashes
    ids = [str(i) for i in range(5000)] + ["01", "1 ", " 1", "1.0"]
    unique = input_source(
        make_spec(write(pl.DataFrame({"id": ids}), tmp_path / f"u{suffix}"), id_column="id")
    )
    check_source_ids(unique, hashes_per_pass=64)
    late = write(pl.DataFrame({"id": [*ids, "4321", "17"]}), tmp_path / f"late{suffix}")
    with pytest.raises(InputError) as caught:
        check_source_ids(input_source(make_spec(late, id_column="id")), hashes_per_pass=64)
    assert "'17' occurs 2 times" in str(caught.value)
    assert "'4321' occurs 2 times" in str(caught.value)
    blank = write(pl.DataFrame({"id": [*ids[:300], "", *ids[300:]]}), tmp_path / f"b{suffix}")
    with pytest.raises(InputError, match=r"row 301: the id column 'id' is an empty string"):
        check_source_ids(input_source(make_spec(blank, id_column="id")), hashes_per_pass=64)


def test_an_empty_id_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": "a"}\n{"id": null}\n')
    with pytest.raises(InputError, match=r"row 2: the id column 'id' is empty"):
        check_unique_ids(make_spec(path, id_column="id"))


def test_read_head_previews_without_failing_on_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(BAD_JSONL)
    assert read_head(make_spec(path), 10)["id"].to_list() == ["a", "b", "e"]
    assert read_head(make_spec(path), 1).height == 1


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_reading_the_schema_does_not_import_pandas(tmp_path: Path, suffix: str) -> None:
    # pandas costs a quarter of a second of every run's start, and nothing needs it;
    # pyarrow.compute (which polars imports to convert a lone array) 8 MB of memory
    path = write(FRAME, tmp_path / f"in{suffix}")
    script = textwrap.dedent(
        f"""
        import sys
        from batchchat.planning.source import input_source
        from batchchat.spec import load_spec
        spec = load_spec({{
            "input": {{"path": {str(path)!r}}},
            "request": {{"model": "m", "messages": [{{"role": "user", "content": "x"}}]}},
        }})
        assert input_source(spec).schema["rating"] is not None
        print("pandas" in sys.modules, "pyarrow.compute" in sys.modules)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False False"


# -- rows per file (where each file's rows begin) ----------------------------------------------


@pytest.mark.parametrize("suffix", ["parquet", "csv", "jsonl"])
def test_file_row_counts_say_where_each_files_rows_begin(tmp_path: Path, suffix: str) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for number, (start, stop) in enumerate([(0, 10), (10, 13), (13, 25)]):
        part = FRAME.slice(start, stop - start)
        path = folder / f"{number}.{suffix}"
        {"parquet": part.write_parquet, "csv": part.write_csv, "jsonl": part.write_ndjson}[suffix](
            path
        )
    spec = make_spec(folder)
    assert reader.file_row_counts(input_source(spec)) == [10, 3, 12]
    # files past the limit are not read at all
    assert reader.file_row_counts(input_source(make_spec(folder, limit=11))) == [10, 3]


def test_file_row_counts_leave_out_the_lines_a_run_skips(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": "a", "n": 1}\n[1, 2]\n\n{oops\n{"id": "c", "n": 3}\n')
    issues: list[InputIssue] = []
    source = input_source(make_spec(path, on_bad_line="skip"))
    assert reader.file_row_counts(source, on_issue=issues.append) == [2]
    assert [issue.line for issue in issues] == [2, 4]
    assert sum(frame.height for frame in reader.iter_batches(source)) == 2
