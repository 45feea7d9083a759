"""How a run shows its progress: a live line on a terminal, periodic plain lines in cron/Airflow
logs, or one JSON event per line (``--log-json``) for machines."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

import orjson
from rich.console import Console
from rich.live import Live
from rich.text import Text

from batchchat.models import ExecutionStats, StopReason


@dataclass(frozen=True)
class Snapshot:
    """What a progress display shows at one moment."""

    done: int
    failed: int
    skipped: int
    #: rows answered from the response cache (nothing sent for them)
    cached: int
    requests_sent: int
    rate_limited: int
    elapsed_s: float
    requests_per_s: float
    tokens_per_s: float
    cost_usd: float
    eta_s: float | None
    #: the requests the job has in all, when known (input rows × samples)
    total: int | None = None
    #: why the run is ending early (an ETA would be stale then), else None
    stopping: str | None = None
    in_flight: int = 0

    @classmethod
    def of(cls, stats: ExecutionStats, elapsed: float) -> Snapshot:
        done = stats.results_ok + stats.results_error
        elapsed = max(elapsed, 1e-9)
        rate = done / elapsed
        total = stats.planned
        remaining = None if total is None else max(total - done - stats.skipped, 0)
        stopping = None
        if stats.stop_reason != StopReason.COMPLETED and stats.finished_at is None:
            stopping = stats.stop_reason.value
        eta = remaining / rate if remaining is not None and rate > 0 and not stopping else None
        return cls(
            done=done,
            failed=stats.results_error,
            skipped=stats.skipped,
            cached=stats.cache_hits,
            requests_sent=stats.requests_sent,
            rate_limited=stats.rate_limited,
            elapsed_s=elapsed,
            requests_per_s=stats.requests_sent / elapsed,
            tokens_per_s=(stats.prompt_tokens + stats.completion_tokens) / elapsed,
            cost_usd=stats.cost_usd,
            eta_s=eta,
            total=total,
            stopping=stopping,
            in_flight=stats.in_flight,
        )

    def line(self) -> str:
        eta = f", ETA {format_duration(self.eta_s)}" if self.eta_s is not None else ""
        if self.stopping:
            eta = f", stopping ({self.stopping}): {self.in_flight:,} in flight"
        skipped = f", {self.skipped:,} skipped" if self.skipped else ""
        cached = f", {self.cached:,} from the cache" if self.cached else ""
        return (
            f"{self._progress()} ({self.failed:,} failed{skipped}{cached}), "
            f"{self.requests_per_s:,.1f} req/s, {self.tokens_per_s:,.0f} tok/s, "
            f"${self.cost_usd:,.4f}{eta}"
        )

    def _progress(self) -> str:
        """``1,234/10,000 done (12%)``, counting rows an earlier run finished as done."""
        if not self.total:
            return f"{self.done:,} done"
        finished = self.done + self.skipped
        return f"{finished:,}/{self.total:,} done ({100 * finished / self.total:.0f}%)"

    def as_event(self) -> dict[str, Any]:
        return {
            "done": self.done,
            "failed": self.failed,
            "skipped": self.skipped,
            "requests_sent": self.requests_sent,
            "rate_limited": self.rate_limited,
            "elapsed_s": round(self.elapsed_s, 3),
            "requests_per_s": round(self.requests_per_s, 2),
            "tokens_per_s": round(self.tokens_per_s, 1),
            "cost_usd": round(self.cost_usd, 6),
            "eta_s": None if self.eta_s is None else round(self.eta_s, 1),
            "total": self.total,
            "stopping": self.stopping,
            # keys added later go last: scripts and the docs read the earlier ones in order
            "cached": self.cached,
        }


def format_duration(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, seconds = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class ProgressDisplay:
    """Chooses the display: ``live`` (TTY), ``plain`` (log lines every ``every_s``), ``json``
    (events on stdout), or ``quiet``. Use as a context manager; call ``update`` with stats."""

    def __init__(
        self,
        mode: str,
        *,
        fields: dict[str, Any] | None = None,
        every_s: float = 10.0,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._mode = mode
        self._fields = fields or {}  # run id and job name, for JSON events
        self._every_s = every_s
        self._stream = stream or (sys.stdout if mode == "json" else sys.stderr)
        self._clock = clock
        self._started = clock()
        self._last_line = self._started
        self._live: Live | None = None

    def __enter__(self) -> ProgressDisplay:
        if self._mode == "live":
            console = Console(file=self._stream)
            self._live = Live(Text("starting…"), console=console, refresh_per_second=4)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def update(self, stats: ExecutionStats, *, final: bool = False) -> None:
        now = self._clock()
        snapshot = Snapshot.of(stats, now - self._started)
        if self._live is not None:
            self._live.update(Text(snapshot.line()))
        elif self._mode == "plain" and (final or now - self._last_line >= self._every_s):
            self._last_line = now
            print(f"batchchat: {snapshot.line()}", file=self._stream, flush=True)
        elif self._mode == "json":
            self.event("finished" if final else "progress", **snapshot.as_event())

    def warn(self, message: str) -> None:
        """Something allowed but worth a look: a line on stderr, or a JSON event."""
        if self._mode == "json":
            self.event("warning", message=message)
        elif self._mode != "quiet":
            print(f"warning: {message}", file=sys.stderr, flush=True)

    def event(self, name: str, **values: Any) -> None:
        """One JSON line (only in json mode): the event name, run id, job, and the values."""
        if self._mode != "json":
            return
        record = {"event": name, **self._fields, **values}
        self._stream.write(orjson.dumps(record, default=str).decode() + "\n")
        self._stream.flush()
