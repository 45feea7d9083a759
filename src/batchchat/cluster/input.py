"""The job's input as a Ray dataset: its rows, each with its position in the input.

A row's position is its id when the job has no ``input.id_column``, and its
``row_index`` always, so a row must get the same position on Ray as in a local run --
or resume across engines would mix rows up. Ray's own readers cannot say where a row sat
in its file, so the input is read by Ray tasks through batchchat's own reader (the same
column types, encodings and bad-line handling as a local run): a file is read in pieces,
one Ray task each, and a piece knows where its rows begin from the row counts the driver
took (:func:`batchchat.planning.reader.file_row_counts`, which a local run takes too).

Pieces, not one task per file: Ray hands a read task's output to one worker as one
task, so a job of one file would be sent by one worker while the others wait. A piece
reads its file from the start and keeps only its own rows, so a file is read about
``pieces / 2`` times over; pieces are few (:data:`PIECES_PER_WORKER` per worker, in all).
"""

from __future__ import annotations

import functools
import math
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

#: pieces of the input per worker: enough for each to have work while another's ends
PIECES_PER_WORKER = 8


class InputRows(Datasource):
    """The rows of an :class:`InputSource`, with their positions, read by Ray tasks."""

    def __init__(
        self, source: InputSource, counts: list[int], *, workers: int = 1, min_rows: int = 1
    ) -> None:
        """``counts``: the rows of each file, in order (files past ``input.limit`` left
        out); the input is cut into about ``PIECES_PER_WORKER * workers`` pieces of at
        least ``min_rows`` rows (a worker's batch) each."""
        self._source = source
        self._counts = counts
        limit = source.spec.limit
        total = sum(counts) if limit is None else min(sum(counts), limit)
        self._piece_rows = max(min_rows, math.ceil(total / (PIECES_PER_WORKER * workers)), 1)

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(
        self,
        parallelism: int,
        per_task_row_limit: int | None = None,
        data_context: DataContext | None = None,
    ) -> list[ReadTask]:
        """The read tasks: each file's rows of the run in pieces (``parallelism`` is Ray's
        guess; the pieces are cut for the workers instead)."""
        tasks, start = [], 0
        limit = self._source.spec.limit
        for path, count in zip(self._source.files, self._counts, strict=False):
            rows = count if limit is None else max(0, min(count, limit - start))
            for skip in range(0, rows, self._piece_rows):
                piece = min(self._piece_rows, rows - skip)
                read = functools.partial(read_piece, self._source, path, start, skip, piece)
                metadata = BlockMetadata(
                    num_rows=piece, size_bytes=None, input_files=(str(path),), exec_stats=None
                )
                tasks.append(ReadTask(read, metadata))
            start += count
        return tasks


def read_piece(
    source: InputSource, path: Path, first: int, skip: int, rows: int
) -> Iterator[pa.Table]:
    """``rows`` rows of one file after its first ``skip``, as blocks, each row with its
    position (``first`` is the position of the file's first row)."""
    seen = 0  # rows of the file before the frame at hand
    for frame in file_frames(source, path):
        begin, end = max(0, skip - seen), min(frame.height, skip + rows - seen)
        if end > begin:
            position = first + seen + begin
            numbered = frame.slice(begin, end - begin).with_columns(
                pl.int_range(position, position + end - begin, dtype=pl.Int64).alias(POSITION)
            )
            # the oldest Arrow types (large_string, not string views): what Ray's blocks expect
            yield numbered.to_arrow(compat_level=pl.CompatLevel.oldest())
        seen += frame.height
        if seen >= skip + rows:
            return
