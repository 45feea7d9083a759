"""Which shard may become a batch now: the enqueued-token queue, backoff, and the budget. Pure.

A provider queues a limited number of prompt tokens per model; a batch created past it is
accepted and then fails with ``token_limit_exceeded``. So shards go out in waves: a shard
of a model is created while the tokens of this job's running batches of that model plus
its own stay within ``batch.max_enqueued_tokens``, and the next wave is released as earlier
batches end. A shard refused for the limit anyway waits until one of the batches running
then has ended (or, when none was, for ``batch.token_limit_backoff_s``), and holds back
the other shards of its model meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass

from batchchat.batchapi.state import BatchState, Shard


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a shard may be created now, and if not, what it waits for."""

    ready: bool
    #: "tokens", "token_limit", "budget" (when not ready)
    waits_for: str | None = None


READY = Verdict(True)


def enqueued_tokens(state: BatchState, model: str) -> int:
    """Prompt tokens of this job's batches of ``model`` in the provider's queue now."""
    return sum(
        shard.tokens
        for shard in state.shards
        if shard.model == model and (shard.running or shard.phase == "creating")
    )


def is_held_back(state: BatchState, shard: Shard, now: float) -> bool:
    """True while ``shard`` waits after ``token_limit_exceeded``."""
    if shard.not_before is not None and now < shard.not_before:
        return True
    if not shard.after:
        return False
    waited_for = [state.find(shard_id) for shard_id in shard.after]
    return all(other is not None and other.running for other in waited_for)


def verdict(
    state: BatchState,
    shard: Shard,
    *,
    now: float,
    max_tokens: int | None,
    budget_left: float | None,
) -> Verdict:
    """May ``shard`` (planned or uploaded) become a batch now?"""
    same_model = [s for s in state.shards if s.model == shard.model and s.live]
    if any(is_held_back(state, other, now) for other in same_model):
        return Verdict(False, "token_limit")
    if max_tokens is not None:
        queued = enqueued_tokens(state, shard.model)
        if queued and queued + shard.tokens > max_tokens:
            return Verdict(False, "tokens")
    worst = shard.worst_cost_usd or 0.0
    if budget_left is not None and worst > budget_left:
        return Verdict(False, "budget")
    return READY


def reserved_usd(state: BatchState) -> float:
    """The most the batches running now can still cost (what the budget holds for them)."""
    return sum(
        shard.worst_cost_usd or 0.0
        for shard in state.shards
        if shard.running or shard.phase in ("creating", "collecting")
    )
