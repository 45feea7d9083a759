"""Which shard may become a batch now: a table of queue, backoff and budget situations."""

from __future__ import annotations

from batchchat.batchapi.state import BatchState, Shard
from batchchat.batchapi.waves import enqueued_tokens, reserved_usd, verdict


def state_of(*shards: Shard) -> BatchState:
    return BatchState("t", shards=list(shards))


def running(shard_id: str, tokens: int, model: str = "m", worst: float = 1.0) -> Shard:
    return Shard(
        shard_id, model, 10, 0, tokens, worst, phase="submitted", status="in_progress", batch_id="b"
    )


def waiting(shard_id: str, tokens: int, model: str = "m", **extra: object) -> Shard:
    return Shard(shard_id, model, 10, 0, tokens, 1.0, **extra)  # type: ignore[arg-type]


def test_a_wave_admits_shards_while_their_tokens_fit_per_model() -> None:
    state = state_of(
        running("a", 600), waiting("b", 300), waiting("c", 500), waiting("d", 900, "other")
    )
    rule = {"now": 0.0, "max_tokens": 1000, "budget_left": None}
    assert enqueued_tokens(state, "m") == 600
    assert verdict(state, state.shards[1], **rule).ready  # type: ignore[arg-type]
    assert verdict(state, state.shards[2], **rule).waits_for == "tokens"  # type: ignore[arg-type]
    assert verdict(state, state.shards[3], **rule).ready  # another model's queue  # type: ignore[arg-type]


def test_the_first_shard_of_a_model_always_goes() -> None:
    state = state_of(waiting("a", 5000))
    assert verdict(state, state.shards[0], now=0.0, max_tokens=1000, budget_left=None).ready


def test_after_token_limit_exceeded_the_model_waits_for_a_batch_to_end_or_the_backoff() -> None:
    held = waiting("b", 100, after=["a"])
    state = state_of(running("a", 100), held, waiting("c", 100))
    assert (
        verdict(state, held, now=0.0, max_tokens=None, budget_left=None).waits_for == "token_limit"
    )
    assert not verdict(state, state.shards[2], now=0.0, max_tokens=None, budget_left=None).ready
    state.shards[0].status = "completed"
    assert verdict(state, held, now=0.0, max_tokens=None, budget_left=None).ready
    timed = waiting("d", 100, not_before=50.0)
    alone = state_of(timed)
    assert not verdict(alone, timed, now=10.0, max_tokens=None, budget_left=None).ready
    assert verdict(alone, timed, now=50.0, max_tokens=None, budget_left=None).ready


def test_a_shard_waits_when_its_worst_case_does_not_fit_the_budget() -> None:
    state = state_of(running("a", 10, worst=2.0), waiting("b", 10))
    assert reserved_usd(state) == 2.0
    assert (
        verdict(state, state.shards[1], now=0, max_tokens=None, budget_left=0.5).waits_for
        == "budget"
    )
    assert verdict(state, state.shards[1], now=0, max_tokens=None, budget_left=1.0).ready
