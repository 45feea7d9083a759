"""The cache file: answers by key in one SQLite database, shared safely by concurrent jobs.

Why SQLite (the standard library's ``sqlite3``) and not a directory of content-addressed
files: a write is a transaction, so two jobs filling one cache can never leave half an
entry or lose one; in WAL mode readers never wait for a writer; the size of the cache,
the least recently used answers and the hit counts are single indexed queries, where
files would need a walk and a ``stat`` of every entry (and an inode each) to evict or
to count; and ``batchchat cache`` reads its figures from one place. Writers take the
lock up front (``BEGIN IMMEDIATE``) and wait for each other up to ``busy_timeout``.
WAL needs a local disk (not NFS), which a per-user cache directory is.

Bounded: the stored bytes are kept in ``totals``, updated in the same transaction as
each entry, and when a write passes the limit the least recently used answers are
evicted down to :data:`LOW_WATER` of it, so eviction runs once per batch of writes, not
on every one; the freed pages go back to the disk (``auto_vacuum = INCREMENTAL``).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from batchchat.errors import CacheError
from batchchat.spec.cache import CACHE_FILE

#: the layout of the database; another value is refused, never guessed at
FORMAT = "1"
#: eviction makes room down to this share of the limit
LOW_WATER = 0.9
#: how long a writer waits for another process's transaction (ms)
BUSY_TIMEOUT_MS = 30_000

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS answers (
        key TEXT PRIMARY KEY,
        body BLOB NOT NULL,
        size INTEGER NOT NULL,
        model TEXT,
        cost_usd REAL,
        created_at REAL NOT NULL,
        used_at REAL NOT NULL,
        hits INTEGER NOT NULL DEFAULT 0,
        saved_usd REAL NOT NULL DEFAULT 0,
        reasks INTEGER NOT NULL DEFAULT 0,
        reask_cost_usd REAL NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS answers_by_use ON answers (used_at)",
    "CREATE TABLE IF NOT EXISTS totals (name TEXT PRIMARY KEY, value REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
_TOTALS = ("bytes", "hits", "saved_usd", "stored", "evicted")


@dataclass(frozen=True, slots=True)
class NewEntry:
    """An answer to store: its key, its encoded body, and what it cost."""

    key: str
    body: bytes
    model: str | None
    cost_usd: float | None
    #: re-asks the row took to reach this answer (it is the row's final answer), and
    #: what the answers before it cost: a hit saves those too
    reasks: int = 0
    reask_cost_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class Stored:
    """A stored answer: its encoded body, the re-asks that reached it and their cost."""

    body: bytes
    reasks: int = 0
    reask_cost_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class Hit:
    """An answer served: its key, and what it would have cost."""

    key: str
    saved_usd: float


@dataclass(frozen=True, slots=True)
class CacheInfo:
    """What ``batchchat cache info`` shows."""

    path: Path
    #: answers stored now
    entries: int
    #: bytes of the stored answers, and of the files on disk (database and its log)
    stored_bytes: int
    file_bytes: int
    #: every answer served, and what those answers would have cost (since the last clear)
    hits: int
    saved_usd: float
    #: answers added, and answers evicted to stay under a job's size limit
    stored: int
    evicted: int
    oldest: float | None
    newest: float | None


class ResponseStore:
    """One cache database, opened by one process (each process opens its own)."""

    def __init__(
        self, directory: Path, *, read_only: bool = False, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = directory / CACHE_FILE
        self.read_only = read_only
        self._clock = clock
        self._db = self._connect(directory)

    # -- opening ----------------------------------------------------------------------------

    def _connect(self, directory: Path) -> sqlite3.Connection:
        try:
            if self.read_only:
                uri = f"{self.path.absolute().as_uri()}?mode=ro"
                db = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
            else:
                directory.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000)
            db.isolation_level = None  # transactions are begun explicitly, below
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if not self.read_only:
                self._create(db)
            self._check_format(db)
        except (sqlite3.Error, OSError) as exc:
            raise self._error("cannot open", exc) from None
        return db

    def _create(self, db: sqlite3.Connection) -> None:
        # auto_vacuum only takes on a database without tables: set it before creating them
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        if db.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
            raise sqlite3.OperationalError("the database cannot use write-ahead logging")
        db.execute("PRAGMA synchronous = NORMAL")  # durable at each checkpoint; WAL keeps it whole
        with _transaction(db):
            for statement in _SCHEMA:
                db.execute(statement)
            db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (FORMAT,))
            db.executemany("INSERT OR IGNORE INTO totals VALUES (?, 0)", [(n,) for n in _TOTALS])

    def _check_format(self, db: sqlite3.Connection) -> None:
        row = db.execute("SELECT value FROM meta WHERE name = 'format'").fetchone()
        if row is None or row[0] != FORMAT:
            found = "no format" if row is None else f"format {row[0]}"
            raise sqlite3.DatabaseError(f"{found}; this batchchat reads format {FORMAT}")

    def _error(self, doing: str, exc: BaseException) -> CacheError:
        return CacheError(
            f"{doing} the response cache {self.path}: {exc}. Clear it with `batchchat cache "
            "clear`, delete the file, or set cache.path to another directory"
        )

    # -- reading ----------------------------------------------------------------------------

    def get(self, key: str) -> Stored | None:
        """The stored answer of ``key``, or None."""
        try:
            row = self._db.execute(
                "SELECT body, reasks, reask_cost_usd FROM answers WHERE key = ?", (key,)
            ).fetchone()
        except sqlite3.Error as exc:
            raise self._error("cannot read", exc) from None
        return None if row is None else Stored(bytes(row[0]), int(row[1]), float(row[2]))

    def info(self) -> CacheInfo:
        try:
            entries, oldest, newest = self._db.execute(
                "SELECT count(*), min(created_at), max(created_at) FROM answers"
            ).fetchone()
            totals = dict(self._db.execute("SELECT name, value FROM totals").fetchall())
        except sqlite3.Error as exc:
            raise self._error("cannot read", exc) from None
        files = [self.path, self.path.with_name(self.path.name + "-wal")]
        return CacheInfo(
            path=self.path,
            entries=int(entries),
            stored_bytes=int(totals.get("bytes", 0)),
            file_bytes=sum(f.stat().st_size for f in files if f.exists()),
            hits=int(totals.get("hits", 0)),
            saved_usd=float(totals.get("saved_usd", 0.0)),
            stored=int(totals.get("stored", 0)),
            evicted=int(totals.get("evicted", 0)),
            oldest=oldest,
            newest=newest,
        )

    # -- writing ----------------------------------------------------------------------------

    def put_many(self, entries: Iterable[NewEntry], *, max_bytes: int) -> tuple[int, int]:
        """Store ``entries`` (replacing older answers to the same keys) in one transaction,
        then evict down to the limit; returns (stored, evicted). An entry larger than the
        whole limit is not stored."""
        now = self._clock()
        rows = [e for e in entries if len(e.body) <= max_bytes]
        if not rows:
            return 0, 0
        try:
            with _transaction(self._db):
                added = sum(self._put(entry, now) for entry in rows)
                self._add("stored", len(rows))
                self._add("bytes", added)
                evicted = self._evict(max_bytes)
            if evicted:
                self._db.execute("PRAGMA incremental_vacuum")
        except sqlite3.Error as exc:
            raise self._error("cannot write to", exc) from None
        return len(rows), evicted

    def _put(self, entry: NewEntry, now: float) -> int:
        """Store one entry; returns how many bytes the store grew by."""
        old = self._db.execute("SELECT size FROM answers WHERE key = ?", (entry.key,)).fetchone()
        self._db.execute(
            "INSERT OR REPLACE INTO answers (key, body, size, model, cost_usd, created_at, "
            "used_at, reasks, reask_cost_usd) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                entry.key,
                entry.body,
                len(entry.body),
                entry.model,
                entry.cost_usd,
                now,
                now,
                entry.reasks,
                entry.reask_cost_usd,
            ),
        )
        return len(entry.body) - (old[0] if old else 0)

    def _evict(self, max_bytes: int) -> int:
        stored = self._total("bytes")
        if stored <= max_bytes:
            return 0
        target = stored - int(max_bytes * LOW_WATER)
        freed = evicted = 0
        oldest_first = self._db.execute("SELECT key, size FROM answers ORDER BY used_at, key")
        doomed = []
        for key, size in oldest_first:
            if freed >= target:
                break
            doomed.append((key,))
            freed += size
        self._db.executemany("DELETE FROM answers WHERE key = ?", doomed)
        evicted = len(doomed)
        self._add("bytes", -freed)
        self._add("evicted", evicted)
        return evicted

    def record_hits(self, hits: Iterable[Hit]) -> None:
        """Count answers served: their last use (for eviction), hits and savings."""
        found = list(hits)
        if not found:
            return
        now = self._clock()
        try:
            with _transaction(self._db):
                self._db.executemany(
                    "UPDATE answers SET hits = hits + 1, used_at = ?, saved_usd = saved_usd + ? "
                    "WHERE key = ?",
                    [(now, hit.saved_usd, hit.key) for hit in found],
                )
                self._add("hits", len(found))
                self._add("saved_usd", sum(hit.saved_usd for hit in found))
        except sqlite3.Error as exc:
            raise self._error("cannot write to", exc) from None

    def clear(self) -> int:
        """Delete every answer and reset the counters; returns how many answers were deleted."""
        try:
            with _transaction(self._db):
                count = self._db.execute("SELECT count(*) FROM answers").fetchone()[0]
                self._db.execute("DELETE FROM answers")
                self._db.execute("UPDATE totals SET value = 0")
            self._db.execute("VACUUM")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            raise self._error("cannot clear", exc) from None
        return int(count)

    def _total(self, name: str) -> float:
        row = self._db.execute("SELECT value FROM totals WHERE name = ?", (name,)).fetchone()
        return float(row[0]) if row else 0.0

    def _add(self, name: str, amount: float) -> None:
        self._db.execute("UPDATE totals SET value = value + ? WHERE name = ?", (amount, name))

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()

    def __enter__(self) -> ResponseStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, its lock taken up front (``BEGIN IMMEDIATE``): two writers
    never both read and then both try to write, which SQLite would refuse one of."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def remove_cache(directory: Path) -> None:
    """Delete the cache files themselves (a damaged cache no query can clear)."""
    path = directory / CACHE_FILE
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm"):
        (directory / name).unlink(missing_ok=True)


def cache_exists(directory: Path) -> bool:
    """Whether ``directory`` holds a cache database."""
    return os.path.isfile(directory / CACHE_FILE)
