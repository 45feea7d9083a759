"""The input, resolved once: text that is not text, files that do not match, empty inputs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from batchchat.errors import InputError
from batchchat.planning import reader
from batchchat.planning.ids import check_unique_ids
from batchchat.planning.source import InputSource, input_source
from batchchat.spec import load_spec


def source(path: Path | str, **input_fields: Any) -> InputSource:
    spec = load_spec(
        {
            "input": {"path": str(path), **input_fields},
            "request": {"model": "m", "messages": [{"role": "user", "content": "x"}]},
        }
    )
    return input_source(spec)


def rows(path: Path | str, **input_fields: Any) -> pl.DataFrame:
    return pl.concat(reader.iter_batches(source(path, **input_fields)))


def test_one_byte_that_is_not_utf8_in_a_csv_names_its_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    path.write_bytes(b"id,text\n1,hello\n2,caf\xe9 au lait\n")
    with pytest.raises(InputError) as caught:
        source(path)
    message = str(caught.value)
    assert f"{path}:3:6: not valid utf-8 text in column 'text' (byte 0xe9)" in message
    assert "set input.encoding" in message


def test_a_csv_in_another_encoding_is_read_as_text_when_the_spec_says_so(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    path.write_bytes("id,text\n1,café au lait\n".encode("latin-1"))
    assert rows(path, encoding="latin-1")["text"].to_list() == ["café au lait"]


def test_a_late_bad_byte_in_a_csv_is_found_too(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    lines = [f"{i},row number {i} with some padding text".encode() for i in range(50_000)]
    lines[40_000] = b"40000,bad \xff byte"
    path.write_bytes(b"id,text\n" + b"\n".join(lines) + b"\n")
    with pytest.raises(InputError, match=rf"{path.name}:40002:\d+: not valid utf-8 text"):
        rows(path)


def test_a_jsonl_line_that_is_not_utf8_names_its_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"id": "a", "text": "fine"}\n{"id": "b", "text": "caf\xe9"}\n')
    with pytest.raises(InputError, match=rf"{path.name}:2:25: not valid UTF-8 text \(byte 0xe9\)"):
        rows(path)


def test_a_lone_surrogate_is_an_error_not_a_nul(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(
        b'{"id": "a", "text": "\\ud83d\\ude00 fine"}\n{"id": "b", "text": "a\\ud800b"}\n'
    )
    with pytest.raises(InputError, match=rf"{path.name}:2:\d+: malformed JSON"):
        rows(path)
    path.write_bytes(b'{"id": "a", "text": "\\ud83d\\ude00 fine"}\n')
    assert rows(path)["text"].to_list() == ["😀 fine"]  # a surrogate pair is an emoji


def test_jsonl_in_another_encoding_is_read_when_the_spec_says_so(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes('{"id": "a", "text": "naïve"}\n'.encode("cp1252"))
    assert rows(path, encoding="cp1252")["text"].to_list() == ["naïve"]
    path.write_bytes('{"id": "a", "text": "naïve"}\n'.encode("utf-16"))
    with pytest.raises(InputError, match=r"UTF-16 file needs input\.encoding: utf-16"):
        source(path)
    assert rows(path, encoding="utf-16")["text"].to_list() == ["naïve"]


def test_an_unknown_encoding_is_a_spec_error() -> None:
    with pytest.raises(Exception, match="unknown encoding 'klingon'"):
        source("x.csv", encoding="klingon")


def test_files_with_different_columns_are_refused_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"id": "1", "text": "x"}\n')
    (tmp_path / "b.jsonl").write_text('{"id": "2", "body": "y"}\n')
    with pytest.raises(InputError) as caught:
        source(tmp_path)
    message = str(caught.value)
    assert f"{tmp_path / 'b.jsonl'}: its columns differ from the first input file's" in message
    assert "it lacks text" in message and "it has body in addition" in message


def test_parquet_files_must_agree_on_types_too(tmp_path: Path) -> None:
    pl.DataFrame({"id": ["1"], "n": [1]}).write_parquet(tmp_path / "a.parquet")
    pl.DataFrame({"id": ["2"], "n": ["one"]}).write_parquet(tmp_path / "b.parquet")
    with pytest.raises(InputError, match=r"b\.parquet: its columns differ .* n: String"):
        source(tmp_path)


def test_an_empty_input_says_so(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("")
    with pytest.raises(InputError, match="no JSON object on its first lines: the file is empty"):
        source(path)


def test_a_path_that_is_not_a_regular_file_says_so() -> None:
    with pytest.raises(InputError, match="is not a regular file"):
        source(os.devnull, format="jsonl")


def test_an_empty_string_id_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": "a"}\n{"id": ""}\n')
    with pytest.raises(InputError, match=r"row 2: the id column 'id' is an empty string"):
        check_unique_ids(source(path, id_column="id"))


# -- a table another stage read (a batchchat output directory's results) -------------------------


def table(frame: pl.DataFrame, **input_fields: Any) -> InputSource:
    spec = load_spec(
        {
            "input": {"path": "/up", **input_fields},
            "request": {"model": "m", "messages": [{"role": "user", "content": "x"}]},
        }
    )
    return input_source(spec, frame.lazy())


UPSTREAM = pl.DataFrame(
    {"row_id": [f"r{i}" for i in range(25)], "label": ["a", "b"] * 12 + ["a"], "n": range(25)}
)


def test_a_table_is_read_in_batches_like_files() -> None:
    found = table(UPSTREAM, batch_size=10, id_column="row_id")
    assert (found.format, found.files, found.describe()) == (
        "results",
        (Path("/up"),),
        "/up (batchchat results)",
    )
    batches = list(reader.iter_batches(found))
    assert [b.height for b in batches] == [10, 10, 5]
    assert pl.concat(batches).equals(UPSTREAM)
    assert reader.count_rows(found) == 25
    assert reader.read_head(found, 3).equals(UPSTREAM.head(3))
    assert next(f.columns for f in reader.file_frames(found, Path("/up"), ["n"])) == ["n"]
    check_unique_ids(found)


def test_a_table_honours_the_limit() -> None:
    limited = table(UPSTREAM, limit=7, batch_size=5)
    assert reader.count_rows(limited) == 7
    assert sum(b.height for b in reader.iter_batches(limited)) == 7


def test_duplicate_ids_in_a_table_name_their_rows() -> None:
    twice = pl.concat([UPSTREAM.head(3), UPSTREAM.head(2)])
    with pytest.raises(InputError) as caught:
        check_unique_ids(table(twice, id_column="row_id"))
    assert "'r0' occurs 2 times: /up row 1, /up row 4" in str(caught.value)
