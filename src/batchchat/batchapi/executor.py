"""The batch executor: shard, submit in waves, poll, collect, resubmit; once or to the end.

The steps, each saving the state before the Batch API call it makes::

    find_created    shards caught "creating" by a kill → their batch, found by metadata
    shard_requests  planned requests → shards on disk
    poll            running batches, when due (backing off while nothing changes)
    collect         ended batches → results (batchapi.collect)
    _submit         the shards a wave admits → uploaded → created
    _nap            until the next poll is due, or the run is stopped

With ``wait=False`` (``--no-wait``) it makes one pass and returns: what is still running at
the provider is collected by the next run of the job.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable

from batchchat.batchapi.collect import BatchRun, collect
from batchchat.batchapi.shards import Sharder
from batchchat.batchapi.state import ENDED, Shard
from batchchat.batchapi.waves import READY, reserved_usd, verdict
from batchchat.errors import APIStatusError, BatchAPIError, BatchUnsupportedError
from batchchat.execute.retry import RetryPolicy
from batchchat.models import ChatRequest, StopReason
from batchchat.spec import RetrySpec

#: how far before a create's start a search for its batch looks (clocks differ)
CLOCK_SLACK_S = 600.0
#: the most pages of ``GET /batches`` one search reads
MAX_PAGES = 50
#: failed polling rounds in a row before the run gives up (the batches stay known)
MAX_POLL_FAILURES = 8
#: the shortest nap between two passes
MIN_NAP_S = 0.02
#: requests sharded between two chances for the event loop to run other tasks
_YIELD_EVERY = 2000


async def execute_batches(
    run: BatchRun,
    requests: Iterable[ChatRequest],
    *,
    on_oversize: Callable[[ChatRequest, str], None],
    wait: bool,
    stop: asyncio.Event,
    retry: RetrySpec,
    budget_usd: float | None = None,
) -> StopReason:
    """Take ``requests`` through the Batch API; why it returned."""
    await find_created(run, [s for s in run.state.shards if s.phase == "creating"])
    await shard_requests(run, requests, on_oversize, stop)
    failures = 0
    while True:
        if stop.is_set():
            return StopReason.INTERRUPTED
        try:
            await poll(run, everything=not wait)
            failures = 0
        except BatchAPIError:
            failures += 1
            if failures >= MAX_POLL_FAILURES or not wait:
                raise
        for shard in [s for s in run.state.shards if _is_ended(s)]:
            await collect(run, shard)
        blocked = None if run.fatal else await _submit(run, retry, budget_usd)
        reason = _outcome(run, wait, blocked)
        if reason is not None:
            return reason
        await _nap(run, stop)


def _outcome(run: BatchRun, wait: bool, blocked: str | None) -> StopReason | None:
    """Why the loop ends now; None: it goes on."""
    live = run.state.live()
    running = [shard for shard in live if shard.running or _is_ended(shard)]
    if not live:
        return StopReason.FATAL if run.fatal else StopReason.COMPLETED
    if run.fatal and not running:
        return StopReason.FATAL
    if blocked == "budget" and not running:
        return StopReason.BUDGET
    if not wait:
        return StopReason.PENDING
    return None


def _is_ended(shard: Shard) -> bool:
    return shard.phase == "collecting" or (shard.phase == "submitted" and shard.status in ENDED)


# -- sharding -----------------------------------------------------------------------------------


async def shard_requests(
    run: BatchRun,
    requests: Iterable[ChatRequest],
    on_oversize: Callable[[ChatRequest, str], None],
    stop: asyncio.Event | None = None,
) -> None:
    """Write every planned request into a shard, saving the state at each finished shard
    (until ``stop``: the shards written so far are kept, the rest planned by a later run)."""

    def on_shard(shard: Shard) -> None:
        run.state.shards.append(shard)
        run.save()

    sharder = Sharder(
        run.layout,
        run.settings,
        run.keep_types,
        run.state.new_id,
        on_shard,
        on_oversize,
        worst_cost=lambda request: run.prices.worst_case_usd(request, "batch"),
    )
    try:
        for count, request in enumerate(requests, start=1):
            sharder.add(request)
            if count % _YIELD_EVERY == 0:
                await asyncio.sleep(0)  # the journal and the progress display go on
                if stop is not None and stop.is_set():
                    break
    except BaseException:
        sharder.discard()
        raise
    sharder.close()


# -- submitting ---------------------------------------------------------------------------------


async def _submit(run: BatchRun, retry: RetrySpec, budget_usd: float | None) -> str | None:
    """Create a batch of each shard the waves admit now; what the first one held back waits
    for (None: nothing waits)."""
    waiting = None
    for shard in [s for s in run.state.shards if s.phase in ("planned", "uploading", "uploaded")]:
        left = None
        if budget_usd is not None:
            left = budget_usd - run.stats.cost_usd - reserved_usd(run.state)
        ruling = verdict(
            run.state,
            shard,
            now=run.clock(),
            max_tokens=run.settings.max_enqueued_tokens,
            budget_left=left,
        )
        if ruling is not READY:
            waiting = waiting or ruling.waits_for
            continue
        await _upload(run, shard)
        await _create(run, shard, retry)
    return waiting


async def _upload(run: BatchRun, shard: Shard) -> None:
    if shard.file_id is not None:
        return
    shard.phase = "uploading"
    run.save()
    content = run.layout.batch_input(shard.id).read_bytes()
    try:
        shard.file_id = await run.client.upload(_filename(run.job, shard), content)
    except BatchAPIError as exc:
        _release_if_unsupported(run, exc)
        raise
    shard.phase = "uploaded"
    run.save()


async def _create(run: BatchRun, shard: Shard, retry: RetrySpec) -> None:
    """Create the shard's batch; after a failed attempt, look for it before trying again."""
    assert shard.file_id is not None
    policy, attempt = RetryPolicy(retry), 0
    settings = run.settings
    metadata = {
        "batchchat_key": shard.metadata_key(run.state.token),
        "batchchat_job": run.job[:512],
        **settings.metadata,
    }
    while True:
        attempt += 1
        # saved before every attempt: a kill during it leaves a batch to look for
        shard.phase, shard.intent_at, shard.not_before, shard.after = (
            "creating",
            run.clock(),
            None,
            [],
        )
        run.save()
        try:
            batch = await run.client.create(
                shard.file_id, settings.url, settings.completion_window, metadata
            )
        except BatchAPIError as exc:
            if await find_created(run, [shard]):
                return
            wait = policy.next_wait(exc.__cause__ or exc, attempt, congested=True)
            if wait is None:
                shard.phase = "uploaded"
                run.save()
                _release_if_unsupported(run, exc)
                raise
            await asyncio.sleep(wait / run.pace)
            continue
        _adopt(run, shard, batch)
        run.stats.requests_sent += shard.lines
        return


def _adopt(run: BatchRun, shard: Shard, batch: dict[str, object]) -> None:
    """The shard's batch is ``batch``: it is submitted, and is looked at from now on."""
    shard.batch_id = str(batch.get("id"))
    shard.phase = "submitted"
    _update(shard, batch)
    shard.poll_s = run.settings.poll_interval_s
    shard.next_poll = run.clock() + shard.poll_s / run.pace
    run.save()


def _release_if_unsupported(run: BatchRun, error: BatchAPIError) -> None:
    """The endpoint refused the first upload or create as a server without a Batch API
    does: hand every shard back (nothing is at the provider), so that nothing is left
    that a later run, in either mode, would trip on."""
    status = _status_of(error)
    if status not in (404, 405, 501) or any(s.batch_id or s.history for s in run.state.shards):
        return
    for shard in run.state.live():
        shard.phase = "released"
        run.layout.batch_input(shard.id).unlink(missing_ok=True)
        run.layout.batch_lines(shard.id).unlink(missing_ok=True)
    run.save()
    raise BatchUnsupportedError(
        f"{run.client.display} refused the Batch API: {error}. It has no Batch API; run the "
        "job in online mode (mode: online), or see `batchchat plan --out` for running its "
        "requests elsewhere."
    ) from None


# -- finding a batch a killed run created ----------------------------------------------------


async def find_created(run: BatchRun, shards: list[Shard]) -> bool:
    """Adopt the batch each of ``shards`` (phase creating) may have got, found by its
    metadata key; the ones not found go back to "uploaded". True when all were found."""
    if not shards:
        return True
    wanted = {shard.metadata_key(run.state.token): shard for shard in shards}
    since = min(shard.intent_at or 0.0 for shard in shards) - CLOCK_SLACK_S
    async for batch in _recent_batches(run, since):
        metadata = batch.get("metadata")
        key = metadata.get("batchchat_key") if isinstance(metadata, dict) else None
        shard = wanted.pop(str(key), None) if key is not None else None
        if shard is not None:
            _adopt(run, shard, batch)
        if not wanted:
            return True
    for shard in wanted.values():
        shard.phase = "uploaded"
    run.save()
    return False


async def _recent_batches(run: BatchRun, since: float) -> AsyncIterator[dict[str, object]]:
    after = None
    for _ in range(MAX_PAGES):
        page, more = await run.client.list_batches(after=after)
        for batch in page:
            yield batch
        created = [b.get("created_at") for b in page]
        oldest = min((c for c in created if isinstance(c, int | float)), default=since)
        if not more or not page or oldest < since:
            return
        after = str(page[-1].get("id"))


# -- polling ------------------------------------------------------------------------------------


async def poll(run: BatchRun, *, everything: bool) -> None:
    """Look at each running batch that is due (every one with ``everything``)."""
    now = run.clock()
    for shard in [s for s in run.state.shards if s.running]:
        if not everything and (shard.next_poll or 0.0) > now:
            continue
        assert shard.batch_id is not None
        try:
            batch = await run.client.retrieve(shard.batch_id)
        except BatchAPIError as exc:
            if _status_of(exc) != 404:
                raise
            batch = {"status": "lost"}  # the provider no longer knows it
        before = (shard.status, shard.counts)
        _update(shard, batch)
        settings = run.settings
        if (shard.status, shard.counts) != before:
            shard.poll_s = settings.poll_interval_s
            run.save()
        else:
            grown = (shard.poll_s or settings.poll_interval_s) * settings.poll_backoff
            shard.poll_s = min(grown, settings.max_poll_interval_s)
        shard.next_poll = run.clock() + shard.poll_s / run.pace


def _update(shard: Shard, batch: dict[str, object]) -> None:
    """What the provider says of the shard's batch."""
    status = batch.get("status")
    shard.status = str(status) if status is not None else shard.status
    counts = batch.get("request_counts")
    if isinstance(counts, dict):
        shard.counts = {str(k): int(v) for k, v in counts.items() if isinstance(v, int)}
    for key in ("output_file_id", "error_file_id"):
        value = batch.get(key)
        if isinstance(value, str) and value:
            setattr(shard, key, value)
    errors = batch.get("errors")
    if isinstance(errors, dict) and isinstance(errors.get("data"), list):
        shard.errors = [e for e in errors["data"] if isinstance(e, dict)]
    created = batch.get("created_at")
    if isinstance(created, int | float):
        shard.created_at = float(created)
    ends = [batch.get(f"{name}_at") for name in ("completed", "failed", "expired", "cancelled")]
    ended = [float(at) for at in ends if isinstance(at, int | float)]
    if ended:
        shard.ended_at = max(ended)


async def _nap(run: BatchRun, stop: asyncio.Event) -> None:
    """Wait until the next look is due, or a shard held back may go, or ``stop``."""
    now = run.clock()
    due = [s.next_poll for s in run.state.shards if s.running and s.next_poll is not None]
    due += [s.not_before for s in run.state.live() if s.not_before is not None]
    nap = max(min(due, default=now + 1.0) - now, MIN_NAP_S)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), nap)


def _status_of(error: BaseException) -> int | None:
    cause = error.__cause__
    return cause.http_status if isinstance(cause, APIStatusError) else None


def _filename(job: str, shard: Shard) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in job)[:64]
    return f"batchchat-{safe}-{shard.id}.jsonl"
