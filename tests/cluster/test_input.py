"""The input in pieces for Ray's read tasks: every row once, at the position a local run
gives it (its id when the job has none), across files, pieces and ``input.limit``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest

from batchchat.job import compile_job
from batchchat.planning.reader import file_row_counts
from batchchat.spec import load_spec
from tests._system import ray_installed


def source_of(tmp_path: Path, sizes: list[int], **input_fields: Any) -> Any:
    folder = tmp_path / "in"
    folder.mkdir()
    first = 0
    for number, size in enumerate(sizes):
        texts = [f"row {first + i}" for i in range(size)]
        frame = pl.DataFrame({"text": texts}, schema={"text": pl.String})
        frame.write_parquet(folder / f"part-{number}.parquet")
        first += size
    spec = load_spec(
        {
            "name": "pieces",
            "input": {"path": str(folder), "batch_size": 7, **input_fields},
            "request": {"model": "m", "messages": [{"role": "user", "content": "{{ text }}"}]},
            "output": {"path": str(tmp_path / "out")},
        }
    )
    return compile_job(spec, require_key=False).plan.source


@pytest.mark.parametrize(
    ("sizes", "limit", "workers", "min_rows"),
    [
        ([100], None, 2, 10),  # one file, cut for two workers
        ([30, 0, 45, 8], None, 2, 4),  # several files, one of them empty
        ([30, 45], 50, 1, 1),  # input.limit ends inside the second file
        ([5], None, 8, 64),  # fewer rows than a batch: one piece
    ],
)
def test_pieces_hold_every_row_once_at_its_position(
    tmp_path: Path, sizes: list[int], limit: int | None, workers: int, min_rows: int
) -> None:
    ray_installed()
    from batchchat.cluster.input import InputRows
    from batchchat.cluster.worker import POSITION

    extra = {} if limit is None else {"limit": limit}
    source = source_of(tmp_path, sizes, **extra)
    rows = InputRows(source, file_row_counts(source), workers=workers, min_rows=min_rows)
    tasks = rows.get_read_tasks(parallelism=200)
    assert sum(task.metadata.num_rows for task in tasks) == min(sum(sizes), limit or sum(sizes))
    read = pl.concat([pl.from_arrow(table) for task in tasks for table in task()], how="vertical")
    assert isinstance(read, pl.DataFrame)
    expected = min(sum(sizes), limit or sum(sizes))
    assert read[POSITION].to_list() == list(range(expected))  # in order, none twice
    assert read["text"].to_list() == [f"row {i}" for i in range(expected)]
    if sum(sizes) >= 2 * min_rows * workers:
        assert len(tasks) > 1  # a big enough file is cut: more than one worker gets it
