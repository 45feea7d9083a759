"""Keeps an :class:`ExecutionStats` current while a run goes on. Pure: time comes from a clock.

The executor reports three events -- an attempt went out, an attempt ended, a result
was handed over -- and this module turns them into the counters, the per-status
tally and the one-bucket-per-second timeline the progress display and the report read.
"""

from __future__ import annotations

from collections.abc import Callable

from batchchat.models import ChatResult, ExecutionStats, TimelineBucket, Usage


class StatsRecorder:
    """Counts attempts, statuses and results into ``stats`` (which others read live)."""

    def __init__(self, stats: ExecutionStats, clock: Callable[[], float]) -> None:
        self.stats = stats
        self._clock = clock
        #: clock time of second 0 of the timeline
        self._t0 = clock()

    def attempt_sent(self, *, retry: bool) -> float:
        """One attempt went out; returns its clock time."""
        now = self._clock()
        stats = self.stats
        stats.requests_sent += 1
        stats.in_flight += 1
        if retry:
            stats.retries += 1
        self._bucket(now).requests += 1
        return now

    def attempt_ended(self, status: int) -> None:
        """One attempt ended with ``status`` (0: no response at all)."""
        stats = self.stats
        stats.in_flight -= 1
        stats.status_counts[status] = stats.status_counts.get(status, 0) + 1
        if status == 429:
            stats.rate_limited += 1
            self._bucket(self._clock()).rate_limited += 1

    def result(self, result: ChatResult, now: float) -> None:
        """A final result was handed to the sink at clock time ``now``."""
        stats, bucket = self.stats, self._bucket(now)
        if result.response is None:
            stats.results_error += 1
            bucket.errors += 1
            return
        stats.results_ok += 1
        bucket.ok += 1
        if result.ask_costs_usd is not None:
            return  # a job that re-asks: each answer was counted as it came (see answer)
        usage = result.response.usage
        stats.prompt_tokens += usage.prompt_tokens or 0
        stats.completion_tokens += usage.completion_tokens or 0
        bucket.tokens += total_tokens(usage)
        if result.cost_usd:
            stats.cost_usd += result.cost_usd

    def answer(self, usage: Usage, cost_usd: float | None, *, reask: bool) -> None:
        """An answer of a job that re-asks came back (``reask``: the answer to a re-ask):
        counted now, before the row ends, so the budget and the progress see it."""
        stats = self.stats
        stats.prompt_tokens += usage.prompt_tokens or 0
        stats.completion_tokens += usage.completion_tokens or 0
        self._bucket(self._clock()).tokens += total_tokens(usage)
        if cost_usd:
            stats.cost_usd += cost_usd
            if reask:
                stats.reask_cost_usd += cost_usd

    def _bucket(self, now: float) -> TimelineBucket:
        second = int(now - self._t0)
        timeline = self.stats.timeline
        while len(timeline) <= second:
            timeline.append(TimelineBucket(second=len(timeline)))
        return timeline[second]


def total_tokens(usage: Usage) -> int:
    """The usage's total, or prompt + completion when the server gave no total."""
    if usage.total_tokens is not None:
        return usage.total_tokens
    return (usage.prompt_tokens or 0) + (usage.completion_tokens or 0)
