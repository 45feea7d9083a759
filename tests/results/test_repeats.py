"""Repeated keys found in bounded memory: every duplicate is caught, a collision loses nothing."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchchat.results.journal import Journal
from batchchat.results.ledger import (
    compact_parts,
    has_repeated_keys,
    iter_results,
    read_results,
    sources,
)
from batchchat.results.repeats import (
    key_hashes,
    losers,
    losers_among,
    repeated_hashes,
    winner_masks,
)
from tests._results import make_result, make_spec, server_error, write_parts


def _write(results_dir: Path, *parts: list[tuple[str, int, bool]]) -> None:
    """One part per list of (row_id, sample, ok), written in order through the sink."""
    spec = make_spec()
    for rows in parts:
        results = [
            make_result(row_id, sample, error=None if ok else server_error())
            for row_id, sample, ok in rows
        ]
        write_parts(results_dir, spec, results)


def _positions(lost: dict[int, pl.Series]) -> dict[int, list[int]]:
    return {index: positions.to_list() for index, positions in lost.items()}


def _keys_on_disk(results_dir: Path) -> list[tuple[str, int, str]]:
    frame = pl.read_parquet(results_dir / "*.parquet")
    return sorted(frame.select("row_id", "sample", "status").iter_rows())


def test_a_key_written_twice_in_one_part_is_caught_and_compacted(tmp_path: Path) -> None:
    # what a bug that hands one answer to the sink twice would leave
    results = tmp_path / "results"
    _write(results, [("a", 0, True), ("b", 0, True), ("a", 0, True)])
    assert has_repeated_keys(tmp_path)
    assert _positions(losers(sources(results))) == {0: [0]}
    assert compact_parts(results) == 1
    assert _keys_on_disk(results) == [("a", 0, "ok"), ("b", 0, "ok")]
    assert not has_repeated_keys(tmp_path)


def test_an_ok_row_outranks_a_later_error_and_the_latest_of_equals_wins(tmp_path: Path) -> None:
    results = tmp_path / "results"
    _write(
        results,
        [("a", 0, True), ("b", 0, False), ("c", 0, False)],
        [("a", 0, False), ("b", 0, False), ("c", 0, True)],
    )
    assert _positions(losers(sources(results))) == {
        0: [1, 2],  # b's earlier error, c's error
        1: [0],  # a's later error: a was ok before
    }
    assert compact_parts(results) == 3
    assert _keys_on_disk(results) == [("a", 0, "ok"), ("b", 0, "error"), ("c", 0, "ok")]


def test_every_duplicate_is_caught_when_the_check_takes_many_passes(tmp_path: Path) -> None:
    results = tmp_path / "results"
    first = [(f"r{i}", 0, i % 3 != 0) for i in range(40)]
    again = [(f"r{i}", 0, True) for i in range(0, 40, 7)]
    _write(results, first, again)
    found = sources(results)
    expected = key_hashes(pl.DataFrame({"row_id": [r for r, _, _ in again], "sample": [0] * 6}))
    for per_pass in (1, 3, 16, 1000):  # 80, 14, 3 and 1 passes
        repeated = repeated_hashes(found, per_pass=per_pass)
        assert sorted(repeated.to_list()) == sorted(expected.to_list())


def test_no_key_repeats_in_any_pass_of_a_clean_ledger(tmp_path: Path) -> None:
    results = tmp_path / "results"
    _write(results, [(f"r{i}", s, True) for i in range(30) for s in range(2)])
    assert repeated_hashes(sources(results), per_pass=7).is_empty()
    assert winner_masks(sources(results)) == {}


def test_rows_whose_hash_repeats_but_whose_keys_differ_are_kept(tmp_path: Path) -> None:
    # a collision: told that every hash repeats, only the truly repeated key loses a row
    results = tmp_path / "results"
    _write(results, [("a", 0, False), ("b", 0, True)], [("a", 0, True), ("c", 0, False)])
    found = sources(results)
    every = pl.concat([key_hashes(pl.read_parquet(path)) for path in results.glob("*.parquet")])
    assert _positions(losers_among(found, every)) == {0: [0]}


def test_a_killed_runs_journal_is_checked_with_the_parts(tmp_path: Path) -> None:
    results = tmp_path / "results"
    _write(results, [("a", 0, False), ("b", 0, True)])
    part = pq.read_table(results / "part-00000.parquet")
    journal = Journal(results, 1, part.schema)
    journal.append(part.slice(0, 1))  # a's error again: a killed run wrote it once more
    journal.close()  # as a kill leaves it: not folded
    found = sources(results)
    assert len(found) == 2 and isinstance(found[1], pl.DataFrame)
    assert _positions(losers(found)) == {0: [0]}
    assert read_results(tmp_path).height == 2
    assert sorted(frame.height for frame in iter_results(tmp_path)) == [1, 1]


_ROWS = st.lists(
    st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 1), st.booleans()), max_size=40
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(parts=st.lists(_ROWS, min_size=1, max_size=4), per_pass=st.integers(1, 50))
def test_compaction_leaves_exactly_the_winner_of_each_key(
    tmp_path_factory: object, parts: list[list[tuple[str, int, bool]]], per_pass: int
) -> None:
    out = tmp_path_factory.mktemp("out")  # type: ignore[attr-defined]
    results = out / "results"
    _write(results, *parts)
    if not any(parts):
        return
    winners: dict[tuple[str, int], tuple[tuple[bool, int], bool]] = {}
    for order, (row_id, sample, ok) in enumerate(row for rows in parts for row in rows):
        rank = (ok, order)
        if (row_id, sample) not in winners or rank > winners[(row_id, sample)][0]:
            winners[(row_id, sample)] = (rank, ok)
    found = sources(results)
    rows = sum(len(rows) for rows in parts)
    assert repeated_hashes(found, per_pass=per_pass).is_empty() == (len(winners) == rows)
    assert compact_parts(results) == rows - len(winners)
    expected = sorted((k[0], k[1], "ok" if ok else "error") for k, (_, ok) in winners.items())
    assert _keys_on_disk(results) == expected
    assert not has_repeated_keys(out)
