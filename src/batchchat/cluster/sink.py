"""The one writer of a Ray run's output directory: the workers' results into the same sink.

Every worker encodes its results into Arrow tables of the job's schema and sends them
here every few tens of ms; this actor, placed on the driver's machine, hands them to
the :class:`~batchchat.results.sink.ParquetSink` a local run uses. So there is one
journal and one sequence of parts, written under the lock the driver holds, exactly as
a local run writes them: an answer is in the journal a moment after it arrives, and a
killed run loses only what was in flight.

The writer lives in a Ray worker process of its own, which outlives a driver killed
with SIGKILL by up to about a second (until Ray notices). It writes nothing once the
driver is gone: the driver's lock on the output directory went with it, and a re-run
may already be writing there. The workers hear the refusal within a
:data:`~batchchat.results.sink.BATCH_S` and stop sending.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pyarrow as pa

from batchchat.errors import SinkError
from batchchat.job import recompile_job
from batchchat.planning.source import InputSource
from batchchat.results.encoder import ResultEncoder
from batchchat.results.sink import BATCH_S, ParquetSink
from batchchat.secrets import Redactor
from batchchat.spec import JobSpec


class ResultWriter:
    """The run's sink, behind an actor's methods (called one at a time, in its loop)."""

    def __init__(
        self,
        results_dir: Path,
        spec: JobSpec,
        source: InputSource,
        *,
        run_id: str,
        secrets: frozenset[str],
        driver_pid: int,
    ) -> None:
        #: the driver's process, on this machine (it holds the output directory's lock)
        self._driver_pid = driver_pid
        job = recompile_job(spec, source)
        encoder = ResultEncoder(job.columns, run_id=run_id, redact=Redactor(secrets))
        self._sink = ParquetSink(
            results_dir,
            encoder,
            part_rows=spec.output.part_rows,
            part_seconds=spec.output.part_seconds,
        )
        self._ticking: asyncio.Task[None] | None = None
        #: result rows taken
        self.rows = 0

    async def write(self, table: pa.Table) -> int:
        """Journal ``table`` now; returns the rows taken so far. Raises SinkError when the
        results cannot be written (the table is kept to be tried again at close), or the
        driver is gone (the table is dropped: nobody holds the directory's lock)."""
        if not _alive(self._driver_pid):
            raise SinkError(
                f"the run's driver (pid {self._driver_pid}) is gone, and with it the lock on "
                "the output directory: nothing more is written; run the job again to resume"
            )
        if self._ticking is None:
            self._ticking = asyncio.create_task(self._tick())
        self.rows += table.num_rows
        self._sink.write_table(table)
        return self.rows

    async def close(self) -> int:
        """Fold the journal into its part; later writes fail. Returns the parts written."""
        if self._ticking is not None:
            self._ticking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticking
        self._sink.close()
        return self._sink.parts_written

    async def _tick(self) -> None:
        """fsync every second and fold a part when it is due, as a local run's sink does."""
        while _alive(self._driver_pid):
            await asyncio.sleep(BATCH_S)
            self._sink.tick()


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, and is another user's
        return True
    return True
