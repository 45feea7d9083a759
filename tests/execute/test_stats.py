"""The live counters: attempts, statuses, results and the per-second timeline."""

from __future__ import annotations

from datetime import UTC, datetime

from batchchat.execute.stats import StatsRecorder, total_tokens
from batchchat.models import ChatRequest, ChatResponse, ChatResult, ExecutionStats, Usage
from tests._fake_time import FakeTime


def _result(response: ChatResponse | None, cost: float | None = None) -> ChatResult:
    now = datetime.now(UTC)
    request = ChatRequest("1", 0, "1#0", {}, "h", 1, 1)
    return ChatResult(request, response, None, 200, 1, 1.0, now, now, cost_usd=cost)


def test_attempts_statuses_and_results_are_counted_per_second() -> None:
    time = FakeTime()
    stats = ExecutionStats(run_id="r", started_at=datetime.now(UTC))
    recorder = StatsRecorder(stats, time.clock)
    recorder.attempt_sent(retry=False)
    recorder.attempt_ended(429)
    time.now += 2.5
    recorder.attempt_sent(retry=True)
    assert stats.in_flight == 1
    recorder.attempt_ended(200)
    usage = Usage(prompt_tokens=7, completion_tokens=3)
    recorder.result(_result(ChatResponse("x", "m", None, [], usage), cost=0.5), time.now)
    recorder.result(_result(None), time.now)
    assert (stats.requests_sent, stats.retries, stats.rate_limited, stats.in_flight) == (2, 1, 1, 0)
    assert stats.status_counts == {429: 1, 200: 1}
    assert (stats.results_ok, stats.results_error, stats.cost_usd) == (1, 1, 0.5)
    assert (stats.prompt_tokens, stats.completion_tokens) == (7, 3)
    assert [b.second for b in stats.timeline] == [0, 1, 2]
    assert [(b.requests, b.rate_limited, b.ok, b.errors, b.tokens) for b in stats.timeline] == [
        (1, 1, 0, 0, 0),
        (0, 0, 0, 0, 0),
        (1, 0, 1, 1, 10),
    ]


def test_total_tokens_prefers_the_servers_total() -> None:
    assert total_tokens(Usage(1, 2, 5)) == 5
    assert total_tokens(Usage(1, 2)) == 3
    assert total_tokens(Usage()) == 0
