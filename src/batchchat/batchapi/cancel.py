"""Cancelling a job's batches, and handing unsent shards back before an online run.

``batchchat cancel DIR`` cancels every batch of the job that is running, hands back the
shards not created yet, and (unless told not to wait) collects what the cancelled batches
had answered: answers already paid for are never thrown away. Lines they had not run are
written as ``batch_cancelled`` errors, and are not sent again; a later run of the job (in
either mode) sends them as it sends any failed row.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from batchchat.batchapi.collect import BatchRun, collect
from batchchat.batchapi.executor import MIN_NAP_S, find_created, poll
from batchchat.batchapi.state import ENDED, BatchState, Shard
from batchchat.errors import BatchAPIError, ResumeError
from batchchat.results.layout import OutputLayout

#: phases of a shard no batch has been made of (yet)
UNSENT = frozenset({"planned", "uploading", "uploaded"})


@dataclass
class Cancelled:
    """What cancelling did."""

    #: batches asked to cancel
    cancelled: list[str]
    #: shards handed back before any batch was made of them
    released: int
    #: batches still cancelling when it returned (``wait=False``)
    cancelling: int


async def cancel_batches(run: BatchRun, *, wait: bool, stop: asyncio.Event) -> Cancelled:
    """Cancel the job's running batches; hand back the unsent shards; with ``wait``, collect
    what the cancelled batches answered once they have ended."""
    await find_created(run, [s for s in run.state.shards if s.phase == "creating"])
    released = release_unsent(run.layout, run.state)
    asked = []
    for shard in [s for s in run.state.shards if s.running]:
        shard.cancelled = True
        run.save()
        assert shard.batch_id is not None
        with contextlib.suppress(BatchAPIError):  # ended meanwhile: collected below
            await run.client.cancel(shard.batch_id)
        asked.append(shard.batch_id)
    while True:
        await poll(run, everything=True)
        for shard in [s for s in run.state.shards if _has_ended(s)]:
            shard.cancelled = True  # ended on its own meanwhile: nothing is sent again
            await collect(run, shard)
        cancelling = sum(1 for shard in run.state.shards if shard.running)
        if not wait or not cancelling or stop.is_set():
            return Cancelled(asked, released, cancelling)
        with contextlib.suppress(TimeoutError):
            nap = max(run.settings.poll_interval_s / run.pace, MIN_NAP_S)
            await asyncio.wait_for(stop.wait(), nap)


def release_unsent(layout: OutputLayout, state: BatchState) -> int:
    """Hand back the shards no batch was made of: their lines are free to be planned again."""
    released = 0
    for shard in state.live():
        if shard.phase in UNSENT:
            shard.phase = "released"
            layout.batch_input(shard.id).unlink(missing_ok=True)
            layout.batch_lines(shard.id).unlink(missing_ok=True)
            released += 1
    if released:
        state.save(layout)
    return released


def check_online(layout: OutputLayout, state: BatchState | None) -> None:
    """Before an online run: refuse while batches of the job may be at the provider (their
    rows would be paid twice); hand back shards that never became a batch."""
    if state is None:
        return
    at_provider = [shard for shard in state.live() if shard.at_provider]
    if at_provider:
        raise ResumeError(_still_at_provider(layout, at_provider))
    release_unsent(layout, state)


def _still_at_provider(layout: OutputLayout, shards: list[Shard]) -> str:
    lines = sum(shard.lines for shard in shards)
    ids = ", ".join(shard.batch_id or shard.id for shard in shards[:5])
    return (
        f"{layout.root}: {len(shards)} batch(es) of this job are at the Batch API with "
        f"{lines:,} lines ({ids}); sending those rows online would pay for them twice. "
        f"Run the job in batch mode to collect them, or cancel them with `batchchat cancel "
        f"{layout.root}` (what they answered is kept) and then run it online."
    )


def _has_ended(shard: Shard) -> bool:
    return shard.phase == "collecting" or (shard.phase == "submitted" and shard.status in ENDED)
