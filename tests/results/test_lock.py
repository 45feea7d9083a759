"""The output directory's lock: one holder at a time; a released or dead holder frees it."""

from __future__ import annotations

import os
import socket
from dataclasses import asdict
from pathlib import Path

import orjson
import pytest

from batchchat.errors import LockedError
from batchchat.results.lock import LOCK, DirLock, LockInfo, live_holder


def info(run_id: str, pid: int | None = None) -> LockInfo:
    return LockInfo(pid or os.getpid(), socket.gethostname(), "2025-03-01T12:00:00+00:00", run_id)


def test_one_holder_at_a_time(tmp_path: Path) -> None:
    first = DirLock(tmp_path / LOCK)
    assert first.acquire(info("a")) is None
    assert live_holder(tmp_path) == info("a")
    with pytest.raises(LockedError, match=rf"{tmp_path} is being written .*run a"):
        DirLock(tmp_path / LOCK).acquire(info("b"))
    first.release()
    first.release()  # twice is harmless
    assert (tmp_path / LOCK).read_bytes() == b""
    assert live_holder(tmp_path) is None
    second = DirLock(tmp_path / LOCK)
    assert second.acquire(info("b")) is None  # a clean release leaves nothing to take over
    second.release()


def test_the_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    dead = info("dead", pid=2**22 + 12345)  # above Linux's largest pid_max: never alive
    (tmp_path / LOCK).write_bytes(orjson.dumps(asdict(dead)))
    assert live_holder(tmp_path) is None  # its content names a process that is gone
    lock = DirLock(tmp_path / LOCK)
    assert lock.acquire(info("new")) == dead
    assert orjson.loads((tmp_path / LOCK).read_bytes())["run_id"] == "new"
    lock.release()


def test_foreign_lock_content_is_ignored(tmp_path: Path) -> None:
    (tmp_path / LOCK).write_text("not json")
    assert live_holder(tmp_path) is None
    lock = DirLock(tmp_path / LOCK)
    assert lock.acquire(info("new")) is None
    lock.release()
