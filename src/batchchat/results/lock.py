"""The lock of an output directory: one writer at a time, and a dead writer's lock is free.

An exclusive ``flock`` on ``<out>/.lock`` — the kernel drops it when its process
dies, however it dies, so a lock left by a killed run is simply taken over. The
file holds the holder's pid, host, start time and run id, for messages and for
``batchchat status``; a clean release empties it.
"""

from __future__ import annotations

import fcntl
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from batchchat.errors import LockedError
from batchchat.results.layout import write_error

LOCK = ".lock"


@dataclass(frozen=True, slots=True)
class LockInfo:
    """Who holds (or last held) an output directory's lock."""

    pid: int
    host: str
    started_at: str
    run_id: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, run {self.run_id}, started {self.started_at}"


def _parse_lock(data: bytes) -> LockInfo | None:
    try:
        raw = orjson.loads(data)
        return LockInfo(
            int(raw["pid"]), str(raw["host"]), str(raw["started_at"]), str(raw["run_id"])
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None  # empty (released cleanly) or foreign content


class DirLock:
    """An exclusive ``flock`` on the lock file; the kernel drops it when its process dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, info: LockInfo) -> LockInfo | None:
        """Take the lock; returns the previous holder's info if it died holding it (stale)."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise write_error(str(self.path), exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _parse_lock(os.pread(fd, 4096, 0))
            os.close(fd)
            who = f" ({holder.describe()})" if holder else ""
            out = self.path.parent
            raise LockedError(
                f"{out} is being written by another batchchat run{who}. Wait for it to finish "
                f"(`batchchat status {out}` tells), or write elsewhere with --new-output DIR."
            ) from None
        stale = _parse_lock(os.pread(fd, 4096, 0))
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, orjson.dumps(asdict(info)), 0)
            os.fsync(fd)
        except OSError as exc:  # a full disk: say so, not a traceback
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise write_error(str(self.path), exc) from None
        self._fd = fd
        return stale

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # an empty lock file says "released cleanly"
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def live_holder(out_dir: Path) -> LockInfo | None:
    """The process holding the directory's lock right now, if any."""
    try:
        info = _parse_lock((out_dir / LOCK).read_bytes())
    except OSError:
        return None
    if info is None:
        return None
    if info.host == socket.gethostname() and not _pid_alive(info.pid):
        return None
    return info if _is_locked(out_dir / LOCK) else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_locked(path: Path) -> bool:
    # only reached when the lock file names a live process: the probe is brief and rare
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the shared lock if the probe took it
    return False
