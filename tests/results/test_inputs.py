"""Which upstream answers a directory's rows came from, and what a resume says when they changed."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from batchchat.results.inputs import InputRecord, input_changes, save_input_record
from batchchat.results.layout import OutputLayout


def record(
    rows: list[tuple[str, str]], *, path: str = "/up", where: str | None = None
) -> InputRecord:
    answers = pl.DataFrame(
        {
            "row_id": [r for r, _ in rows],
            "sample": ["0"] * len(rows),
            "run_id": [run for _, run in rows],
            "finished_at": ["2026-01-01T00:00:00"] * len(rows),
        }
    )
    return InputRecord(path, where, answers)


def kept(tmp_path: Path, first: InputRecord) -> OutputLayout:
    layout = OutputLayout(tmp_path)
    save_input_record(layout, first)
    return layout


BEFORE = record([("a", "run-1"), ("b", "run-1"), ("c", "run-1")])


def test_the_summary_is_stable_and_order_free() -> None:
    shuffled = record([("c", "run-1"), ("a", "run-1"), ("b", "run-1")])
    assert BEFORE.summary() == shuffled.summary()
    assert BEFORE.summary()["rows"] == 3
    assert record([("a", "run-2"), ("b", "run-1"), ("c", "run-1")]).summary() != BEFORE.summary()


def test_nothing_changed(tmp_path: Path) -> None:
    layout = kept(tmp_path, BEFORE)
    assert input_changes(layout, BEFORE.summary(), BEFORE) == []
    assert input_changes(layout, None, None) == []


def test_an_upstream_that_only_gained_rows_resumes(tmp_path: Path) -> None:
    layout = kept(tmp_path, BEFORE)
    grown = record([("a", "run-1"), ("b", "run-1"), ("c", "run-1"), ("d", "run-2")])
    assert input_changes(layout, BEFORE.summary(), grown) == []


def test_changed_and_vanished_answers_are_counted_plainly(tmp_path: Path) -> None:
    layout = kept(tmp_path, BEFORE)
    now = record([("a", "run-2"), ("b", "run-1"), ("e", "run-2")])
    assert input_changes(layout, BEFORE.summary(), now) == [
        "the results in /up changed since the last run (that job ran again): of the 3 rows "
        "read then, 1 now carry other answers and 1 are gone (for example a#0, c#0)"
    ]


def test_without_the_record_the_change_is_still_said(tmp_path: Path) -> None:
    layout = OutputLayout(tmp_path)  # upstream.parquet lost
    now = record([("a", "run-2")])
    (line,) = input_changes(layout, BEFORE.summary(), now)
    assert line.startswith("the results in /up changed since the last run (3 rows were read")


def test_a_new_path_or_filter_is_named(tmp_path: Path) -> None:
    layout = kept(tmp_path, BEFORE)
    moved = record([("a", "run-1")], path="/elsewhere", where="label IS NULL")
    assert input_changes(layout, BEFORE.summary(), moved) == [
        "input.path: '/up' → '/elsewhere'",
        "input.where: None → 'label IS NULL'",
    ]


def test_a_file_input_turned_chained_and_back(tmp_path: Path) -> None:
    layout = OutputLayout(tmp_path)
    assert input_changes(layout, None, BEFORE) == [
        "input.path: was a file, now the output directory /up"
    ]
    assert input_changes(layout, BEFORE.summary(), None) == [
        "input.path: was the output directory /up, now a file"
    ]
