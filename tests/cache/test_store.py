"""The cache database: entries, eviction, counters, damaged files, and two writers at once."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from batchchat.cache.store import FORMAT, Hit, NewEntry, ResponseStore, Stored, cache_exists
from batchchat.errors import CacheError
from batchchat.spec.cache import CACHE_FILE


def entry(key: str, size: int = 100, cost: float | None = 0.01) -> NewEntry:
    return NewEntry(key, key.encode().ljust(size, b"."), "gpt-test", cost)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_an_answer_is_stored_read_back_and_replaced(tmp_path: Path) -> None:
    with ResponseStore(tmp_path / "c") as store:
        assert store.get("a") is None
        assert store.put_many([entry("a"), entry("b", 50)], max_bytes=10_000) == (2, 0)
        assert store.get("a") == Stored(entry("a").body, 0)
        newer = NewEntry("a", b"a" * 30, "m", 0.02, reasks=2)
        store.put_many([newer], max_bytes=10_000)  # a newer answer wins
        assert store.get("a") == Stored(newer.body, 2)
        info = store.info()
    assert (info.entries, info.stored_bytes, info.stored) == (2, 80, 3)
    assert info.file_bytes > 0
    assert info.path == tmp_path / "c" / CACHE_FILE
    assert cache_exists(tmp_path / "c")


def test_hits_are_counted_with_what_they_saved(tmp_path: Path) -> None:
    with ResponseStore(tmp_path) as store:
        store.put_many([entry("a"), entry("b")], max_bytes=10_000)
        store.record_hits([Hit("a", 0.25), Hit("a", 0.25), Hit("b", 0.5)])
        store.record_hits([])
        info = store.info()
        hits = dict(store._db.execute("SELECT key, hits FROM answers").fetchall())
    assert (info.hits, info.saved_usd) == (3, pytest.approx(1.0))
    assert hits == {"a": 2, "b": 1}


def test_over_its_limit_the_least_recently_used_answers_go_first(tmp_path: Path) -> None:
    with ResponseStore(tmp_path, clock=Clock()) as store:
        store.put_many([entry(k) for k in "abcd"], max_bytes=1_000)
        store.record_hits([Hit("a", 0.0)])  # a is used again: b is now the oldest
        stored, evicted = store.put_many([entry("e"), entry("f")], max_bytes=500)
        remaining = {k for k in "abcdef" if store.get(k) is not None}
        info = store.info()
    assert (stored, evicted) == (2, 2)  # 600 bytes > 500: down to 450 (90 %)
    assert remaining == {"a", "d", "e", "f"}
    assert (info.entries, info.stored_bytes, info.evicted) == (4, 400, 2)


def test_an_answer_larger_than_the_whole_limit_is_not_stored(tmp_path: Path) -> None:
    with ResponseStore(tmp_path) as store:
        assert store.put_many([entry("big", 2_000)], max_bytes=1_000) == (0, 0)
        assert store.get("big") is None


def test_clear_deletes_every_answer_and_the_counters(tmp_path: Path) -> None:
    with ResponseStore(tmp_path) as store:
        store.put_many([entry(str(i), 5_000) for i in range(50)], max_bytes=10**9)
        store.record_hits([Hit("1", 1.0)])
        big = store.info().file_bytes
        assert store.clear() == 50
        info = store.info()
    assert (info.entries, info.stored_bytes, info.hits, info.saved_usd) == (0, 0, 0, 0.0)
    assert info.file_bytes < big


def test_read_only_reads_and_never_writes(tmp_path: Path) -> None:
    with ResponseStore(tmp_path) as store:
        store.put_many([entry("a")], max_bytes=10_000)
    with ResponseStore(tmp_path, read_only=True) as store:
        stored = store.get("a")
        assert stored is not None and stored.body == entry("a").body
        with pytest.raises(CacheError, match="cannot write to the response cache"):
            store.put_many([entry("b")], max_bytes=10_000)


def test_read_only_without_a_cache_is_a_cache_error(tmp_path: Path) -> None:
    with pytest.raises(CacheError, match="cannot open the response cache"):
        ResponseStore(tmp_path / "none", read_only=True)
    assert not (tmp_path / "none").exists()


def test_a_file_that_is_no_database_is_refused_plainly(tmp_path: Path) -> None:
    (tmp_path / CACHE_FILE).write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(CacheError) as caught:
        ResponseStore(tmp_path)
    message = str(caught.value)
    assert "cannot open the response cache" in message
    assert "batchchat cache clear" in message


def test_a_database_of_another_format_is_refused(tmp_path: Path) -> None:
    ResponseStore(tmp_path).close()
    db = sqlite3.connect(tmp_path / CACHE_FILE)
    db.execute("UPDATE meta SET value = '99' WHERE name = 'format'")
    db.commit()
    db.close()
    with pytest.raises(CacheError, match=f"format 99; this batchchat reads format {FORMAT}"):
        ResponseStore(tmp_path)


def test_a_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / CACHE_FILE)
    db.execute("CREATE TABLE other (x)")
    db.commit()
    db.close()
    with pytest.raises(CacheError):
        ResponseStore(tmp_path, read_only=True)


_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from batchchat.cache.store import NewEntry, ResponseStore, Hit
    directory, name, start = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    while time.time() < start:
        time.sleep(0.001)
    with ResponseStore(directory) as store:
        for batch in range(40):
            keys = [f"shared-{batch}-{i}" for i in range(5)]
            keys += [f"{name}-{batch}-{i}" for i in range(5)]
            entries = [NewEntry(k, (k * 20).encode(), "m", 0.001) for k in keys]
            store.put_many(entries, max_bytes=10**9)
            store.record_hits([Hit(keys[0], 0.001)])
            for key in keys:
                assert store.get(key) is not None, key
    """
)


@pytest.mark.slow
def test_two_processes_filling_one_cache_at_once_corrupt_nothing(tmp_path: Path) -> None:
    ResponseStore(tmp_path).close()  # both open an existing cache, as two jobs do
    start = str(time.time() + 1.0)
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp_path), name, start], stderr=subprocess.PIPE
        )
        for name in ("one", "two")
    ]
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err.decode()
    db = sqlite3.connect(tmp_path / CACHE_FILE)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    count, size = db.execute("SELECT count(*), sum(size) FROM answers").fetchone()
    db.close()
    assert count == 40 * 5 * 3  # shared keys once, each writer's own keys
    with ResponseStore(tmp_path) as store:
        info = store.info()
    assert info.entries == count
    assert info.stored_bytes == size  # the running total agrees with the entries
    assert (info.stored, info.hits) == (2 * 40 * 10, 80)


def test_a_table_gone_mid_run_is_a_cache_error_for_each_operation(tmp_path: Path) -> None:
    store = ResponseStore(tmp_path)
    store._db.execute("DROP TABLE answers")
    with pytest.raises(CacheError, match="cannot read"):
        store.get("a")
    with pytest.raises(CacheError, match="cannot read"):
        store.info()
    with pytest.raises(CacheError, match="cannot write to"):
        store.record_hits([Hit("a", 1.0)])
    with pytest.raises(CacheError, match="cannot clear"):
        store.clear()
    store.close()
    store.close()  # twice is fine
