"""The ledger: which keys repeat, the deduplicated scan, and compaction's quick exit."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from polars.testing import assert_frame_equal

from batchchat.results.ledger import (
    build_index,
    compact_parts,
    has_repeated_keys,
    read_results,
    scan_results,
)
from tests._results import make_result, make_spec, server_error, write_parts


def _ledger(tmp_path: Path, *parts: list[tuple[str, bool]]) -> Path:
    """One part per list of (row_id, ok) pairs, written in order."""
    spec = make_spec()
    for rows in parts:
        results = [make_result(row_id, error=None if ok else server_error()) for row_id, ok in rows]
        write_parts(tmp_path / "results", spec, results)
    return tmp_path


def test_a_ledger_without_repeated_keys_is_scanned_as_it_is(tmp_path: Path) -> None:
    out = _ledger(tmp_path, [("1", True), ("2", False)], [("3", True)])
    assert not has_repeated_keys(out)
    assert compact_parts(out / "results") == 0
    frame = scan_results(out).collect()
    assert frame.select("row_id", "status").rows() == [("1", "ok"), ("2", "error"), ("3", "ok")]


def test_a_retried_key_repeats_until_compaction(tmp_path: Path) -> None:
    out = _ledger(tmp_path, [("1", False), ("2", True)], [("1", True), ("3", False)])
    assert has_repeated_keys(out)
    before = read_results(out).sort("row_id")
    assert before.select("row_id", "status").rows() == [("1", "ok"), ("2", "ok"), ("3", "error")]
    assert compact_parts(out / "results") == 1
    assert not has_repeated_keys(out)
    assert_frame_equal(read_results(out).sort("row_id"), before)
    on_disk = pl.read_parquet(out / "results" / "*.parquet").sort("row_id")
    assert_frame_equal(on_disk, before)


def test_samples_of_one_row_are_different_keys(tmp_path: Path) -> None:
    spec = make_spec()
    write_parts(tmp_path / "results", spec, [make_result("1", 0), make_result("1", 1)])
    assert not has_repeated_keys(tmp_path)
    assert compact_parts(tmp_path / "results") == 0


def test_parts_from_before_a_column_was_added_read_with_it_as_nulls(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    old = pl.DataFrame({"row_id": ["1", "2"], "sample": [0, 0], "status": ["ok", "error"]})
    new = pl.DataFrame(
        {"row_id": ["2"], "sample": [0], "status": ["ok"], "cached": [True], "reasks": [1]}
    )
    old.write_parquet(results / "part-00000.parquet")
    new.write_parquet(results / "part-00001.parquet")
    rows = read_results(tmp_path).sort("row_id")
    assert rows["status"].to_list() == ["ok", "ok"]
    assert rows["cached"].to_list() == [None, True]
    assert build_index(results).ok == 2
