"""The batch state on disk: saved and read back, damaged, and what is pending."""

from __future__ import annotations

from pathlib import Path

import orjson
import polars as pl
import pytest

from batchchat.batchapi.state import (
    BatchState,
    Shard,
    live_shards,
    load_state,
    pending_index,
    read_state,
    summarize,
)
from batchchat.errors import ResumeError
from batchchat.results.layout import OutputLayout


def test_the_state_is_saved_and_read_back_whole(tmp_path: Path) -> None:
    layout = OutputLayout(tmp_path)
    assert read_state(layout) is None
    state = load_state(layout)
    shard = Shard(state.new_id(), "m", 3, 120, 30, 0.1, batch_id="batch_1", phase="submitted")
    shard.history.append("batch_0")
    state.shards.append(shard)
    state.save(layout)
    again = load_state(layout)
    assert again == state and again.token == state.token and len(state.token) == 12
    assert again.new_id() == "s00002"


def test_a_state_written_by_a_newer_batchchat_loads_with_the_fields_it_knows(
    tmp_path: Path,
) -> None:
    layout = OutputLayout(tmp_path)
    shard = {"id": "s00001", "model": "m", "lines": 1, "bytes": 2, "tokens": 3, "future": 1}
    layout.batches.mkdir()
    layout.batch_state.write_bytes(
        orjson.dumps({"token": "t", "next_number": 2, "shards": [shard]})
    )
    assert load_state(layout).shards[0].id == "s00001"


@pytest.mark.parametrize("content", [b"{not json", b'{"shards": 3}', b"[]"])
def test_a_damaged_state_is_a_resume_error_that_says_what_to_do(
    tmp_path: Path, content: bytes
) -> None:
    layout = OutputLayout(tmp_path)
    layout.batches.mkdir()
    layout.batch_state.write_bytes(content)
    with pytest.raises(ResumeError, match=r"batch state|unreadable"):
        load_state(layout)


def test_pending_lines_are_those_of_live_shards(tmp_path: Path) -> None:
    layout = OutputLayout(tmp_path)
    state = BatchState("t")
    for number, (phase, ids) in enumerate(
        [("submitted", ["a", "b"]), ("done", ["c"]), ("planned", ["d"])]
    ):
        shard = Shard(f"s{number}", "m", len(ids), 0, 0, phase=phase)
        state.shards.append(shard)
        layout.batches.mkdir(exist_ok=True)
        pl.DataFrame({"row_id": ids, "sample": [0] * len(ids)}).write_parquet(
            layout.batch_lines(shard.id)
        )
    state.save(layout)
    index = pending_index(layout, live_shards(layout))
    ids = pl.Series(["a", "b", "c", "d", "e"])
    assert index.done(ids, 0).to_list() == [True, True, False, True, False]
    assert index.done(ids, 1).to_list() == [False] * 5


def test_the_summary_counts_batches_lines_and_resubmissions() -> None:
    state = BatchState("t")
    state.shards = [
        Shard("s1", "m", 100, 0, 0, phase="done", batch_id="b1", status="expired", history=["b0"]),
        Shard(
            "s2",
            "m",
            7,
            0,
            0,
            phase="submitted",
            batch_id="b2",
            status="in_progress",
            round=1,
            parent="s1",
        ),
        Shard("s3", "m", 50, 0, 0),
    ]
    summary = summarize(state)
    assert summary["batches"] == 3  # b0 refused for tokens, b1, b2
    assert (summary["lines"], summary["lines_resubmitted"], summary["lines_pending"]) == (
        150,
        7,
        57,
    )
    assert summary["by_status"] == {"expired": 1, "in_progress": 1, "planned": 1}
    assert summary["rounds"] == 1 and summary["token_limited"] == 1
