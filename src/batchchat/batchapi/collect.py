"""An ended batch → its results in the sink, and what is worth sending again → a new shard.

Every line of the shard ends as one result: its answer from the output file, its error from
the error file, or a :class:`BatchLineError` when it is in neither (the batch expired, was
cancelled, or failed). Lines whose error is worth another try (by type, as online:
:func:`batchchat.errors.is_retryable`) and answers whose finish reason
``batch.resubmit_finish_reasons`` names go into a new, smaller shard of the next round, while
rounds are left; their first result is kept meanwhile, and a later ok one replaces it.

The results are made durable (the sink flushed) *before* the state says the shard is done,
so a kill while collecting means collecting again: keys an earlier run had finished are not
written twice.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl

from batchchat.batchapi.client import BatchClient
from batchchat.batchapi.lines import not_run, outcome_of, parse_file
from batchchat.batchapi.shards import read_lines, request_of, split_shard
from batchchat.batchapi.state import BatchState, Shard
from batchchat.errors import (
    BatchAPIError,
    BatchLineInvalid,
    RequestError,
    is_retryable,
)
from batchchat.models import ChatRequest, ChatResponse, ChatResult, ExecutionStats
from batchchat.pricing import PriceTable
from batchchat.results.columns import first_choice
from batchchat.results.layout import OutputLayout
from batchchat.results.ledger import ResumeIndex
from batchchat.spec import BatchSpec

#: why a line is in neither file, by its batch's status
_NOT_RUN = {
    "expired": ("batch_expired", "its batch expired before the line was run"),
    "cancelled": ("batch_cancelled", "its batch was cancelled before the line was run"),
    "failed": ("batch_failed", "its batch failed"),
}
_MISSING = ("missing", "the line is in neither the output nor the error file of its batch")
TOKEN_LIMIT = "token_limit_exceeded"
#: results handed to the sink at once while a file is read
CHUNK = 5000


@dataclass
class BatchRun:
    """What the steps of one batch run share: the state, the client, where results go."""

    layout: OutputLayout
    state: BatchState
    settings: BatchSpec
    client: BatchClient
    prices: PriceTable
    #: the kept input columns and their types (the lines files' ``keep`` struct)
    keep_types: Mapping[str, pl.DataType]
    keep_raw: bool
    on_result: Callable[[ChatResult], None]
    #: makes every result taken so far durable (the sink's flush)
    flush: Callable[[], None]
    stats: ExecutionStats
    #: what earlier runs finished: not written again when a batch is collected again
    done: ResumeIndex = field(default_factory=ResumeIndex.empty)
    clock: Callable[[], float] = time.time
    #: the job's name (in every batch's metadata)
    job: str = "job"
    #: how much faster than real time the provider's time passes (the in-process simulator's
    #: time_scale): poll intervals and backoffs are divided by it
    pace: float = 1.0
    #: why no more batches should be created (a batch failed validation as a whole)
    fatal: str | None = None
    #: takes many results at once (the sink's write_many; without it: one by one)
    on_results: Callable[[list[ChatResult]], None] | None = None

    def save(self) -> None:
        self.state.save(self.layout)


async def collect(run: BatchRun, shard: Shard) -> None:
    """Write the results of ``shard``'s ended batch and resubmit what is worth it."""
    again = shard.phase == "collecting"  # a killed run was collecting it
    shard.phase = "collecting"
    run.save()
    if shard.status == "failed":
        await _settle_failed(run, shard)
        return
    lines = read_lines(run.layout, shard.id)
    requests = {
        row["custom_id"]: request_of(row, shard.model) for row in lines.iter_rows(named=True)
    }
    writer = _Writer(run, shard, again)
    for file_id in (shard.output_file_id, shard.error_file_id):
        if file_id is not None:
            await _read_file(run, file_id, requests, writer)
    code, why = _NOT_RUN.get(shard.status or "", _MISSING)
    for custom_id, request in requests.items():
        if custom_id not in writer.seen:
            writer.write(request, not_run(code, why))
    resend = set() if shard.cancelled else writer.resend
    await _finish(run, shard, writer, resend)


async def _read_file(
    run: BatchRun, file_id: str, requests: Mapping[str, ChatRequest], writer: _Writer
) -> None:
    parsed = parse_file(await run.client.content(file_id))
    for line in parsed.lines:
        request = requests.get(line.custom_id)
        if request is None or line.custom_id in writer.seen:
            writer.strays += 1  # another job's line, or a line twice: never a row of ours
            continue
        writer.seen.add(line.custom_id)
        writer.write(request, outcome_of(line, keep_raw=run.keep_raw), line.status)
    writer.strays += parsed.unreadable


class _Writer:
    """Turns each line's outcome into a result for the sink, and keeps count."""

    def __init__(self, run: BatchRun, shard: Shard, again: bool) -> None:
        self.run, self.shard, self.again = run, shard, again
        self.seen: set[str] = set()
        self._pending: list[ChatResult] = []
        self.resend: set[str] = set()
        self.ok = self.failed = self.strays = 0
        #: this round's failed lines go out again in another (the rounds are not used up)
        self.resubmits = shard.round < run.settings.resubmit_rounds
        self.started = _when(shard.created_at, run.clock)
        self.finished = _when(shard.ended_at, run.clock)

    def write(
        self, request: ChatRequest, outcome: ChatResponse | RequestError, status: int | None = None
    ) -> None:
        run, stats = self.run, self.run.stats
        if isinstance(outcome, ChatResponse):
            self.ok += 1
            if _finish_reason(outcome) in run.settings.resubmit_finish_reasons:
                self.resend.add(request.custom_id)
        else:
            self.failed += 1
            if is_retryable(outcome):
                self.resend.add(request.custom_id)
        stats.status_counts[status or 0] = stats.status_counts.get(status or 0, 0) + 1
        stats.rate_limited += status == 429
        if self.again and _was_done(run.done, request):
            return  # written (and made durable) by the run that was killed collecting
        self._pending.append(self._result(request, outcome, status))
        if len(self._pending) >= CHUNK:
            self.hand_over()

    def hand_over(self) -> None:
        """Give the results gathered so far to the sink."""
        results, self._pending = self._pending, []
        if self.run.on_results is not None and results:
            self.run.on_results(results)
        else:
            for result in results:
                self.run.on_result(result)

    def _result(
        self, request: ChatRequest, outcome: ChatResponse | RequestError, status: int | None
    ) -> ChatResult:
        response = outcome if isinstance(outcome, ChatResponse) else None
        error = outcome if isinstance(outcome, RequestError) else None
        result = ChatResult(
            request=request,
            response=response,
            error=error,
            http_status=status,
            attempts=self.shard.round + 1,
            latency_ms=max((self.finished - self.started).total_seconds(), 0.0) * 1000,
            started_at=self.started,
            finished_at=self.finished,
            batch_id=self.shard.batch_id,
        )
        _count(self.run, result, final=not self._resubmitted(request))
        return result

    def _resubmitted(self, request: ChatRequest) -> bool:
        """The line goes out again in the next round: its row is not done yet."""
        return self.resubmits and request.custom_id in self.resend


def _count(run: BatchRun, result: ChatResult, *, final: bool) -> None:
    """Tokens and cost of every answer; the row as done (ok or failed) only when ``final``
    (a line resubmitted is counted once, by the round that ends it, so progress counts rows)."""
    stats, response = run.stats, result.response
    if response is None:
        stats.results_error += final
        return
    stats.results_ok += final
    model = response.model or result.request.body.get("model")
    result.cost_usd = run.prices.cost_usd(model, response.usage, "batch")
    stats.prompt_tokens += response.usage.prompt_tokens or 0
    stats.completion_tokens += response.usage.completion_tokens or 0
    stats.cost_usd += result.cost_usd or 0.0


async def _finish(run: BatchRun, shard: Shard, writer: _Writer, resend: set[str]) -> None:
    """Durable results, then the next round's shard and ``done`` in one state write."""
    writer.hand_over()
    child = None
    if resend and writer.resubmits:
        child = _child(run, shard, resend, round=shard.round + 1)
    run.flush()
    shard.phase = "done"
    shard.outcome = {
        "ok": writer.ok,
        "failed": writer.failed,
        "resubmitted": 0 if child is None else child.lines,
        "strays": writer.strays,
    }
    if child is not None:
        run.state.shards.append(child)
        run.stats.retries += child.lines
    run.save()
    await _clean_up(run, shard)


def _child(run: BatchRun, parent: Shard, chosen: set[str], *, round: int) -> Shard | None:
    share = len(chosen) / max(parent.lines, 1)
    worst = None if parent.worst_cost_usd is None else parent.worst_cost_usd * share
    shard = Shard(run.state.new_id(), parent.model, 0, 0, 0, worst, round=round, parent=parent.id)
    return split_shard(run.layout, parent, chosen, shard, run.keep_types)


async def _settle_failed(run: BatchRun, shard: Shard) -> None:
    """A batch that failed validation: created again later (token limit), or its refused
    lines written as errors and the rest sent again; refused as a whole: the run stops
    creating batches (every other one would fail the same way)."""
    errors = shard.errors or []
    if any(error.get("code") == TOKEN_LIMIT for error in errors):
        requeue(run, shard)
        return
    lines = read_lines(run.layout, shard.id)
    named = {int(e["line"]) for e in errors if isinstance(e.get("line"), int)}
    summary = _describe_errors(errors)
    writer = _Writer(run, shard, again=False)
    keep: set[str] = set()
    for number, row in enumerate(lines.iter_rows(named=True), start=1):
        if named and number not in named:
            keep.add(row["custom_id"])
            continue
        error = BatchLineInvalid(
            f"batch {shard.batch_id} failed validation: {summary}", code="invalid_request"
        )
        writer.write(request_of(row, shard.model), error)
    if not named:
        run.fatal = run.client.redact(
            f"batch {shard.batch_id} (shard {shard.id}, {shard.lines:,} lines) failed "
            f"validation: {summary}"
        )
    child = _child(run, shard, keep, round=shard.round) if keep else None
    await _finish_validation(run, shard, writer, child)


async def _finish_validation(
    run: BatchRun, shard: Shard, writer: _Writer, child: Shard | None
) -> None:
    writer.hand_over()
    run.flush()
    shard.phase = "done"
    shard.outcome = {"ok": 0, "failed": writer.failed, "resubmitted": 0, "strays": 0}
    if child is not None:
        run.state.shards.append(child)
    run.save()
    await _clean_up(run, shard)


def requeue(run: BatchRun, shard: Shard) -> None:
    """A batch refused for the enqueued-token limit: its shard waits to be created again;
    its lines are not failed rows. With no other batch of the model running, it waits
    ``batch.token_limit_backoff_s``; otherwise until one of them ends."""
    if shard.batch_id is not None:
        shard.history.append(shard.batch_id)
    others = [s.id for s in run.state.shards if s.running and s.model == shard.model]
    backoff = run.settings.token_limit_backoff_s / run.pace
    shard.not_before = None if others else run.clock() + backoff
    shard.after = others
    shard.attempt += 1  # a new batch of it will be created: a new metadata key
    shard.phase, shard.batch_id, shard.status = "uploaded", None, None
    shard.errors = shard.counts = None
    shard.next_poll = shard.poll_s = None
    run.save()


def _describe_errors(errors: list[dict[str, Any]]) -> str:
    if not errors:
        return "the provider gave no reason"
    shown = [
        (f"line {e['line']}: " if isinstance(e.get("line"), int) else "")
        + f"{e.get('code') or 'error'}: {e.get('message') or ''}".strip()
        for e in errors[:3]
    ]
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(shown) + more


async def _clean_up(run: BatchRun, shard: Shard) -> None:
    """Delete the shard's local files and, with ``batch.delete_files``, its files at the
    provider (a failure to delete never fails the run: the results are safe)."""
    for path in (run.layout.batch_input(shard.id), run.layout.batch_lines(shard.id)):
        path.unlink(missing_ok=True)
    if not run.settings.delete_files:
        return
    for file_id in (shard.file_id, shard.output_file_id, shard.error_file_id):
        if file_id is not None:
            with contextlib.suppress(BatchAPIError):
                await run.client.delete_file(file_id)


def _finish_reason(response: ChatResponse) -> str | None:
    choice = first_choice(response.choices)
    return None if choice is None else choice.finish_reason


def _was_done(done: ResumeIndex, request: ChatRequest) -> bool:
    ids = pl.Series([request.row_id], dtype=pl.String)
    return bool(done.done(ids, request.sample)[0])


def _when(epoch: float | None, clock: Callable[[], float]) -> datetime:
    return datetime.fromtimestamp(epoch if epoch is not None else clock(), UTC)
