"""The sink: results in the journal at once, parts by rows and by time, and crash safety."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchchat.errors import ResumeError, SinkError
from batchchat.results.encoder import ResultEncoder
from batchchat.results.journal import Journal, journal_paths, read_journal, recover
from batchchat.results.layout import ROW_GROUP_ROWS, part_paths, remove_temporaries
from batchchat.results.schema import result_columns
from batchchat.results.sink import BATCH_ROWS, BATCH_S, ParquetSink
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
    columns = result_columns(spec or make_spec(), {})
    return ParquetSink(
        results_dir,
        ResultEncoder(columns),
        part_rows=part_rows,
        part_seconds=part_seconds,
        clock=clock or FakeClock(),
    )


def part_sizes(results_dir: Path) -> list[int]:
    return [pq.read_metadata(path).num_rows for path in part_paths(results_dir)]


def journaled(results_dir: Path) -> list[str]:
    """The row ids in the journals (what a kill -9 now would leave besides the parts)."""
    return [
        row_id
        for _, path in journal_paths(results_dir)
        for row_id in read_journal(path).column("row_id").to_pylist()
    ]


def test_a_part_is_written_every_part_rows_results(tmp_path: Path) -> None:
    sink = make_sink(tmp_path, part_rows=3)
    for i in range(7):
        sink.write(make_result(str(i)))
    sink.flush()
    assert part_sizes(tmp_path) == [3, 3, 1]
    sink.close()
    assert [p.name for p in part_paths(tmp_path)] == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    assert sorted(os.listdir(tmp_path)) == [p.name for p in part_paths(tmp_path)]  # no leftovers
    frame = pl.scan_parquet(tmp_path / "*.parquet").collect()
    assert frame["row_id"].to_list() == [str(i) for i in range(7)]


def test_results_are_on_disk_a_moment_after_they_arrive(tmp_path: Path) -> None:
    clock = FakeClock()
    sink = make_sink(tmp_path, part_rows=1000, clock=clock)
    sink.write(make_result("a"))
    sink.tick()
    assert journaled(tmp_path) == []  # waiting for more, a few tens of ms at most
    clock.now += 2 * BATCH_S
    sink.tick()
    assert journaled(tmp_path) == ["a"] and part_sizes(tmp_path) == []
    for i in range(BATCH_ROWS):  # a full batch goes at once, without a tick
        sink.write(make_result(str(i)))
    assert len(journaled(tmp_path)) == 1 + BATCH_ROWS
    sink.close()
    assert part_sizes(tmp_path) == [1 + BATCH_ROWS] and journaled(tmp_path) == []


async def test_in_an_event_loop_answers_are_on_disk_once_the_loop_has_handled_them(
    tmp_path: Path,
) -> None:
    columns = result_columns(make_spec(), {})
    sink = ParquetSink(
        tmp_path,
        ResultEncoder(columns),
        part_rows=1000,
        part_seconds=5.0,
        clock=FakeClock(),  # never moves: no tick would ever find a result old enough
        later=asyncio.get_running_loop().call_later,
    )
    sink.write(make_result("a"))
    sink.write(make_result("b"))  # arrived in the same turn of the loop
    assert journaled(tmp_path) == []
    await asyncio.sleep(0.01)  # a moment: the first append need not wait
    assert journaled(tmp_path) == ["a", "b"]
    (journal,) = journal_paths(tmp_path)
    with pa.ipc.open_stream(journal[1]) as reader:
        assert [len(batch) for batch in reader] == [2]  # one append for the turn, not two
    sink.write(make_result("c"))  # appended after a pause, so that appends stay cheap
    await asyncio.sleep(BATCH_S + 0.01)  # the longest that pause can be
    assert journaled(tmp_path) == ["a", "b", "c"]
    sink.close()
    assert part_sizes(tmp_path) == [3]


def test_tables_encoded_elsewhere_are_journaled_at_once_in_order(tmp_path: Path) -> None:
    sink = make_sink(tmp_path, part_rows=10)
    elsewhere = ResultEncoder(result_columns(make_spec(), {}))  # another process's encoder
    for row_id in ("b", "c", "d"):
        elsewhere.add(make_result(row_id))
    sink.write(make_result("a"))
    sink.write_table(elsewhere.take_table())
    assert journaled(tmp_path) == ["a", "b", "c", "d"]  # "a" went first, without a tick
    assert part_sizes(tmp_path) == [] and len(sink) == 4
    sink.close()
    assert part_sizes(tmp_path) == [4]
    assert pl.read_parquet(tmp_path / "*.parquet")["row_id"].to_list() == ["a", "b", "c", "d"]


def test_a_table_of_other_columns_is_refused(tmp_path: Path) -> None:
    sink = make_sink(tmp_path)
    with pytest.raises(SinkError, match="columns differ"):
        sink.write_table(pa.table({"row_id": ["a"]}))
    sink.close()
    with pytest.raises(SinkError, match="closed"):
        sink.write_table(pa.table({"row_id": ["a"]}))


def test_a_part_is_written_when_the_journal_began_part_seconds_ago(tmp_path: Path) -> None:
    clock = FakeClock()
    sink = make_sink(tmp_path, part_rows=1000, part_seconds=5.0, clock=clock)
    sink.write(make_result("1"))
    clock.now += 3
    sink.write(make_result("2"))
    sink.tick()
    clock.now += 1.9
    sink.tick()
    assert part_sizes(tmp_path) == [] and journaled(tmp_path) == ["1", "2"]
    clock.now += 0.1  # 5 s since the journal began, and no new result arrives
    sink.tick()
    assert part_sizes(tmp_path) == [2] and journaled(tmp_path) == []
    clock.now += 60
    sink.tick()
    assert part_sizes(tmp_path) == [2]  # nothing taken: no empty part
    sink.close()
    assert part_sizes(tmp_path) == [2]


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


def test_a_killed_runs_journal_becomes_its_part_when_the_next_run_opens(tmp_path: Path) -> None:
    columns = result_columns(make_spec(), {})
    journal = Journal(tmp_path, 0, columns.schema)  # what a run killed mid-part leaves
    encoder = ResultEncoder(columns)
    for i in range(5):
        encoder.add(make_result(str(i)))
    journal.append(encoder.take_table())
    journal.close()
    with journal.path.open("ab") as handle:
        handle.write(b"\xff\xff\xff\xff\x10\x00")  # a batch cut short by the kill
    assert part_sizes(tmp_path) == [] and journaled(tmp_path) == [str(i) for i in range(5)]
    make_sink(tmp_path).close()
    assert part_sizes(tmp_path) == [5] and journal_paths(tmp_path) == []


def test_a_large_journal_folds_into_row_groups_with_every_row_in_order(tmp_path: Path) -> None:
    columns = result_columns(make_spec(), {})
    encoder = ResultEncoder(columns)
    encoder.add(make_result("template"))
    one = encoder.take_table()
    rows = 2 * ROW_GROUP_ROWS + 5
    ids = pa.array([f"r{i}" for i in range(rows)], pa.string())
    table = pa.concat_tables([one] * rows).set_column(0, "row_id", ids)
    journal = Journal(tmp_path, 0, columns.schema)
    for batch in table.to_batches(max_chunksize=BATCH_ROWS):
        journal.append(pa.Table.from_batches([batch]))
    journal.close()
    with journal.path.open("ab") as handle:
        handle.write(b"\xff\xff\xff\xff\x10\x00")  # and a batch cut short by a kill
    assert recover(tmp_path) == rows
    part = part_paths(tmp_path)[0]
    assert pq.read_metadata(part).num_row_groups == 3
    assert pq.read_table(part).equals(table)
    assert journal_paths(tmp_path) == []


def test_a_journal_whose_part_exists_is_deleted_without_a_second_copy(tmp_path: Path) -> None:
    sink = make_sink(tmp_path, part_rows=2)
    sink.write(make_result("a"))
    sink.write(make_result("b"))
    sink.close()
    part = part_paths(tmp_path)[0]
    columns = result_columns(make_spec(), {})
    journal = Journal(tmp_path, 0, columns.schema)  # killed between the part and the delete
    journal.append(pq.read_table(part))
    journal.close()
    assert recover(tmp_path) == 0
    assert pq.read_table(part).column("row_id").to_pylist() == ["a", "b"]
    assert journal_paths(tmp_path) == []


def test_a_torn_batch_ends_the_journal_without_inventing_rows(tmp_path: Path) -> None:
    columns = result_columns(make_spec(), {})
    journal = Journal(tmp_path, 0, columns.schema)
    encoder = ResultEncoder(columns)
    encoder.add(make_result("kept"))
    journal.append(encoder.take_table())
    encoder.add(make_result("torn"))
    torn = encoder.take_table()
    zeros = torn.set_column(  # what a power cut can leave: the right shape, zeroed data
        torn.schema.get_field_index("status"), "status", pa.array([""], pa.string())
    )
    journal.append(zeros)
    journal.close()
    assert read_journal(journal.path).column("row_id").to_pylist() == ["kept"]


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


def test_a_failed_write_is_a_sink_error_naming_the_file(tmp_path: Path) -> None:
    results = tmp_path / "results"
    sink = make_sink(results)
    sink.write(make_result("1"))
    shutil.rmtree(results)
    results.write_text("not a directory")  # the disk went away under the sink
    with pytest.raises(SinkError, match=r"cannot write .*journal-00000\.arrows"):
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
import pyarrow.parquet as pq
from tests._results import logprobs_of, make_choice, make_result, make_spec

results_dir, part_rows = Path(sys.argv[1]), int(sys.argv[2])
spec = make_spec()
columns = result_columns(spec, {})
sink = ParquetSink(results_dir, ResultEncoder(columns), part_rows=part_rows, part_seconds=1e9)
# the sink folded what a killed writer journaled: number on from every row kept
row = sum(pq.read_metadata(path).num_rows for path in part_paths(results_dir))
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
        for _ in range(rng.randint(1, 2)):  # let it write a part or two first
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
            assert 0 < pq.read_table(path).num_rows <= part_rows, path
        allowed = (".tmp-", "part-", ".journal-", ".reserve")
        assert all(name.startswith(allowed) for name in os.listdir(tmp_path))
        remove_temporaries(tmp_path)
        # what the journal holds is the rows the parts do not: none lost, none twice
        recover(tmp_path)
    frame = pl.scan_parquet(tmp_path / "*.parquet").select("row_id").collect()
    ids = [int(i) for i in frame["row_id"]]
    assert ids == list(range(len(ids)))  # in order: none lost before a kill, none twice
    assert len(ids) >= part_rows
    assert not [name for name in os.listdir(tmp_path) if name.startswith((".tmp-", ".journal-"))]
