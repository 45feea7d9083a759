"""The job's input as a Ray dataset: its rows, each with its position in the input.

A row's position is its id when the job has no ``input.id_column``, and its
``row_index`` always, so a row must get the same position on Ray as in a local run --
or resume across engines would mix rows up. Ray's own readers cannot say where a row sat
in its file, so the input is read by Ray tasks through batchchat's own reader (the same
column types, encodings and bad-line handling as a local run): one read task per file,
which knows where that file's rows begin from the row counts the driver took
(:func:`batchchat.planning.reader.file_row_counts`, which a local run takes too).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow as pa
from ray.data.block import BlockMetadata
from ray.data.context import DataContext
from ray.data.datasource import Datasource, ReadTask

from batchchat.cluster.worker import POSITION
from batchchat.planning.reader import file_frames
from batchchat.planning.source import InputSource


class InputRows(Datasource):
    """The rows of an :class:`InputSource`, with their positions, read by Ray tasks."""

    def __init__(self, source: InputSource, counts: list[int]) -> None:
        """``counts``: the rows of each file, in order (files past ``input.limit`` left out)."""
        self._source = source
        self._counts = counts

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(
        self,
        parallelism: int,
        per_task_row_limit: int | None = None,
        data_context: DataContext | None = None,
    ) -> list[ReadTask]:
        """One task per file that holds rows of the run (``parallelism`` does not split one)."""
        tasks, start = [], 0
        limit = self._source.spec.limit
        for path, count in zip(self._source.files, self._counts, strict=False):
            rows = count if limit is None else max(0, min(count, limit - start))
            if rows:
                read = functools.partial(read_file, self._source, path, start, rows)
                metadata = BlockMetadata(
                    num_rows=rows, size_bytes=None, input_files=(str(path),), exec_stats=None
                )
                tasks.append(ReadTask(read, metadata))
            start += count
        return tasks


def read_file(source: InputSource, path: Path, first: int, rows: int) -> Iterator[pa.Table]:
    """The first ``rows`` rows of one file, as blocks, each row with its position (``first``
    is the position of the file's first row)."""
    position = first
    for frame in file_frames(source, path):
        frame = frame.head(first + rows - position)
        if frame.is_empty():
            return
        numbered = frame.with_columns(
            pl.int_range(position, position + frame.height, dtype=pl.Int64).alias(POSITION)
        )
        position += frame.height
        # the oldest Arrow types (large_string, not string views): what Ray's blocks expect
        yield numbered.to_arrow(compat_level=pl.CompatLevel.oldest())
