"""Parquet parts: rotation by rows and by time, numbering across runs, and crash safety."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from batchchat.errors import ResumeError, SinkError
from batchchat.results.encoder import ResultEncoder
from batchchat.results.layout import part_paths, remove_temporaries
from batchchat.results.schema import result_columns
from batchchat.results.sink import ParquetSink
from batchchat.spec import JobSpec
from tests._results import make_result, make_spec

ROOT = Path(__file__).resolve().parents[2]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_sink(
    results_dir: Path,
    spec: JobSpec | None = None,
    *,
    part_rows: int = 3,
    part_seconds: float = 5.0,
    clock: FakeClock | None = None,
) -> ParquetSink:
    spec = spec or make_spec()
    columns = result_columns(spec, {})
    schema = columns.schema
    return ParquetSink(
        results_dir,
        schema,
        ResultEncoder(columns),
        part_rows=part_rows,
        part_seconds=part_seconds,
        clock=clock or FakeClock(),
    )


def part_sizes(results_dir: Path) -> list[int]:
    return [pq.read_metadata(path).num_rows for path in part_paths(results_dir)]


def test_a_part_is_written_every_part_rows_results(tmp_path: Path) -> None:
    sink = make_sink(tmp_path, part_rows=3)
    for i in range(7):
        sink.write(make_result(str(i)))
    assert part_sizes(tmp_path) == [3, 3]
    assert len(sink) == 1
    sink.close()
    assert part_sizes(tmp_path) == [3, 3, 1]
    assert [p.name for p in part_paths(tmp_path)] == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    assert sorted(os.listdir(tmp_path)) == [p.name for p in part_paths(tmp_path)]  # no leftovers
    frame = pl.scan_parquet(tmp_path / "*.parquet").collect()
    assert frame["row_id"].to_list() == [str(i) for i in range(7)]


def test_a_part_is_written_when_the_oldest_result_waited_part_seconds(tmp_path: Path) -> None:
    clock = FakeClock()
    sink = make_sink(tmp_path, part_rows=1000, part_seconds=5.0, clock=clock)
    sink.write(make_result("1"))
    clock.now += 3
    sink.write(make_result("2"))
    clock.now += 1.9
    assert sink.flush_if_due() is False and part_sizes(tmp_path) == []
    clock.now += 0.1  # 5 s since the first buffered result, and no new result arrives
    assert sink.flush_if_due() is True
    assert part_sizes(tmp_path) == [2]
    clock.now += 60
    assert sink.flush_if_due() is False  # nothing buffered: no empty part
    sink.write(make_result("3"))
    clock.now += 5
    sink.write(make_result("4"))  # a write past the deadline flushes too
    assert part_sizes(tmp_path) == [2, 2]
    sink.close()
    assert part_sizes(tmp_path) == [2, 2]


def test_numbering_continues_across_runs(tmp_path: Path) -> None:
    first = make_sink(tmp_path, part_rows=2)
    for i in range(4):
        first.write(make_result(str(i)))
    first.close()
    second = make_sink(tmp_path, part_rows=2)
    second.write(make_result("4"))
    second.close()
    assert [p.name for p in part_paths(tmp_path)][-1] == "part-00002.parquet"
    assert second.parts_written == 1


def test_writing_after_close_is_an_error(tmp_path: Path) -> None:
    sink = make_sink(tmp_path)
    sink.close()
    sink.close()  # closing twice is harmless
    with pytest.raises(SinkError, match="closed"):
        sink.write(make_result("1"))


def test_parts_of_other_columns_are_refused(tmp_path: Path) -> None:
    sink = make_sink(tmp_path)
    sink.write(make_result("1"))
    sink.close()
    with pytest.raises(ResumeError) as caught:
        make_sink(tmp_path, make_spec(output={"parse": "json", "keep_raw": True}))
    message = str(caught.value)
    assert "+ parsed (string)" in message and "+ raw_response (string)" in message
    assert "--new-output" in message and "--force" in message


def test_a_failed_write_is_a_sink_error_naming_the_part(tmp_path: Path) -> None:
    results = tmp_path / "results"
    sink = make_sink(results)
    sink.write(make_result("1"))
    results.rmdir()
    results.write_text("not a directory")  # the disk went away under the sink
    with pytest.raises(SinkError, match=r"cannot write .*part-00000\.parquet"):
        sink.flush()


# -- crash safety ------------------------------------------------------------------------------

#: a writer that never stops: it numbers rows on from the parts already there
WRITER = """
import sys
from pathlib import Path
from batchchat.results.encoder import ResultEncoder
from batchchat.results.schema import result_columns
from batchchat.results.layout import part_paths
from batchchat.results.sink import ParquetSink
from tests._results import logprobs_of, make_choice, make_result, make_spec

results_dir, part_rows = Path(sys.argv[1]), int(sys.argv[2])
spec = make_spec()
columns = result_columns(spec, {})
schema = columns.schema
sink = ParquetSink(results_dir, schema, ResultEncoder(columns),
                   part_rows=part_rows, part_seconds=1e9)
row = len(part_paths(results_dir)) * part_rows
print("ready", flush=True)
while True:
    choice = make_choice("x" * 300, logprobs=logprobs_of(*"abcdefghij"))
    sink.write(make_result(str(row), choices=[choice]))
    row += 1
    if row % part_rows == 0:
        print(row, flush=True)
"""


def kill_writer_at_a_random_moment(results_dir: Path, part_rows: int, rng: random.Random) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(results_dir), str(part_rows)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "ready"
        for _ in range(rng.randint(0, 2)):  # let it write a few parts first
            child.stdout.readline()
        # then kill it mid-flight: while it encodes, writes, fsyncs or renames a part
        _spin(rng.uniform(0, 0.08))
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
        child.stdout.close()


def _spin(seconds: float) -> None:
    # a busy wait of a random length picks the moment of the kill; it is not a wait for a result
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


@pytest.mark.slow
def test_sigkill_at_any_moment_leaves_only_whole_parts(tmp_path: Path) -> None:
    rng = random.Random(20250301)
    part_rows = 400
    for _ in range(4):
        kill_writer_at_a_random_moment(tmp_path, part_rows, rng)
        # every visible part is whole and readable; nothing half-written has a part name
        for path in part_paths(tmp_path):
            assert pq.read_table(path).num_rows == part_rows, path
        assert all(
            name.startswith(".tmp-") or name.startswith("part-") for name in os.listdir(tmp_path)
        )
        remove_temporaries(tmp_path)
    frame = pl.scan_parquet(tmp_path / "*.parquet").select("row_id").collect()
    ids = sorted(int(i) for i in frame["row_id"])
    assert ids == list(range(len(ids)))  # no row lost inside a part, none duplicated
    assert len(ids) >= part_rows
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".tmp-")]
