"""A run's use of the cache: hits as cached rows, new answers kept, trouble never fatal."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from batchchat.answers.check import answer_check
from batchchat.cache.serve import RunCache
from batchchat.cache.store import ResponseStore
from batchchat.models import ChatRequest, ChatResult, ExecutionStats
from batchchat.spec import CacheSpec
from batchchat.spec.cache import CACHE_FILE
from tests._results import make_choice, make_result, make_spec


def _stats() -> ExecutionStats:
    return ExecutionStats(run_id="r", started_at=datetime.now(UTC))


def _price(result: ChatResult) -> float | None:
    return 0.002 if result.response is not None else None


def run_cache(
    tmp_path: Path, stats: ExecutionStats | None = None, **settings: Any
) -> tuple[RunCache, list[str]]:
    warnings: list[str] = []
    options = {k: settings.pop(k) for k in ("check", "reasks", "keep_raw") if k in settings}
    cache = RunCache(
        CacheSpec(**settings),
        tmp_path / "cache",
        stats or _stats(),
        price=_price,
        on_warning=warnings.append,
        **options,
    )
    return cache, warnings


def answered(row: str, content: str = "hello", finish: str = "stop", seed: int = 1) -> ChatResult:
    result = make_result(row, choices=[make_choice(content, finish_reason=finish)], seed=seed)
    result.cost_usd = 0.002
    return result


def test_an_answer_kept_by_one_run_answers_the_next_as_a_cached_row(tmp_path: Path) -> None:
    first, _ = run_cache(tmp_path)
    first.offer(answered("1"))
    first.close()

    stats = _stats()
    second, warnings = run_cache(tmp_path, stats)
    hit = second.answer(answered("1").request)
    second.close()

    assert warnings == []
    assert hit is not None and hit.cached
    assert hit.response == answered("1").response
    assert (hit.cost_usd, hit.cost_saved_usd, hit.attempts, hit.http_status) == (
        0.0,
        0.002,
        0,
        None,
    )
    assert (stats.cache_hits, stats.cache_saved_usd) == (1, 0.002)
    with ResponseStore(tmp_path / "cache") as store:
        info = store.info()
    assert (info.entries, info.hits, info.saved_usd) == (1, 1, pytest.approx(0.002))


def test_serve_passes_on_the_misses_and_writes_the_hits(tmp_path: Path) -> None:
    cache, _ = run_cache(tmp_path)
    cache.offer(answered("1"))
    cache.flush()
    stats = cache.stats
    hits: list[ChatResult] = []
    requests = [answered(row).request for row in ("1", "2", "1")]
    missed = list(cache.serve(requests, on_hit=hits.append))
    assert [r.row_id for r in missed] == ["2"]
    assert [h.request.row_id for h in hits] == ["1", "1"]
    assert (stats.results_ok, stats.cache_hits) == (2, 2)


def test_what_the_job_may_not_be_served_it_does_not_store(tmp_path: Path) -> None:
    cache, _ = run_cache(tmp_path)
    sampling = make_result("2", choices=[make_choice("x")])  # no seed, no temperature
    cut = answered("3", finish="length")
    cache.offer(sampling)
    cache.offer(cut)
    cache.offer(make_result("4", error=RuntimeError("boom"), seed=1))
    cache.flush()
    assert cache.stats.cache_stored == 0
    assert cache.answer(sampling.request) is None
    wide, _ = run_cache(tmp_path, serve="any", store_length=True)
    wide.offer(sampling)
    wide.offer(cut)
    wide.flush()
    assert wide.stats.cache_stored == 2
    assert wide.answer(sampling.request) is not None
    assert cache.answer(cut.request) is not None  # stored now, served to any job


def test_a_cached_row_is_never_stored_again(tmp_path: Path) -> None:
    cache, _ = run_cache(tmp_path)
    cache.offer(answered("1"))
    cache.flush()
    hit = cache.answer(answered("1").request)
    assert hit is not None
    cache.offer(hit)
    cache.flush()
    assert cache.stats.cache_stored == 1


def test_a_stored_answer_that_fails_the_check_is_sent_again_when_the_row_may_be_reasked(
    tmp_path: Path,
) -> None:
    check = answer_check(make_spec(output={"parse": "json", "reask": 1}))
    prose = answered("1", content="not json")
    plain, _ = run_cache(tmp_path)
    plain.offer(prose)
    plain.flush()
    assert plain.answer(prose.request) is not None  # a job without re-asks takes it as it is
    reasking, _ = run_cache(tmp_path, check=check, reasks=1)
    assert reasking.answer(prose.request) is None
    reasking.offer(answered("1", content='{"ok": true}'))
    reasking.flush()
    hit = reasking.answer(prose.request)
    assert hit is not None and hit.response is not None
    assert hit.response.choices[0].content == '{"ok": true}'  # the newer answer replaced it


def test_an_answer_already_reasked_as_often_is_served_not_paid_for_again(
    tmp_path: Path,
) -> None:
    check = answer_check(make_spec(output={"parse": "json", "reask": 2}))
    stubborn = answered("1", content="still not json")
    stubborn.reasks = 2  # the row that stored it used both of its re-asks
    stubborn.ask_costs_usd = [0.001, 0.003, 0.002]
    cache, _ = run_cache(tmp_path, check=check, reasks=2)
    cache.offer(stubborn)
    cache.flush()
    hit = cache.answer(stubborn.request)
    assert hit is not None and hit.response is not None
    assert hit.response.choices[0].content == "still not json"
    assert hit.cost_saved_usd == pytest.approx(0.002 + 0.004)  # the answer, and its re-asks
    more, _ = run_cache(tmp_path, check=check, reasks=3)  # this job would ask once more
    assert more.answer(stubborn.request) is None


def test_keep_raw_gives_a_cached_row_its_stored_completion(tmp_path: Path) -> None:
    cache, _ = run_cache(tmp_path, keep_raw=True)
    cache.offer(answered("1"))
    cache.flush()
    hit = cache.answer(answered("1").request)
    assert hit is not None and hit.response is not None
    assert hit.response.raw is not None and '"object":"chat.completion"' in hit.response.raw


def test_read_only_serves_and_stores_nothing(tmp_path: Path) -> None:
    writer, _ = run_cache(tmp_path)
    writer.offer(answered("1"))
    writer.close()
    reader, warnings = run_cache(tmp_path, mode="read-only")
    assert reader.answer(answered("1").request) is not None
    reader.offer(answered("2"))
    reader.close()
    with ResponseStore(tmp_path / "cache") as store:
        info = store.info()
    assert (info.entries, info.hits, warnings) == (1, 0, [])


def test_read_only_without_a_cache_says_so_and_serves_nothing(tmp_path: Path) -> None:
    cache, warnings = run_cache(tmp_path, mode="read-only")
    assert not cache.is_open
    assert cache.answer(answered("1").request) is None
    assert warnings == [
        f"cache: no response cache in {tmp_path / 'cache'} yet (read-only): none used"
    ]
    assert not (tmp_path / "cache").exists()


def test_a_damaged_cache_is_a_warning_and_the_run_goes_on(tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / CACHE_FILE).write_bytes(b"garbage" * 1000)
    cache, warnings = run_cache(tmp_path)
    assert not cache.is_open
    assert cache.answer(answered("1").request) is None
    cache.offer(answered("1"))
    cache.close()
    assert len(warnings) == 1 and "this run goes on without it" in warnings[0]


def test_a_cache_that_breaks_mid_run_is_dropped_once(tmp_path: Path) -> None:
    cache, warnings = run_cache(tmp_path)
    cache.offer(answered("1"))
    cache.flush()
    store = cache._store
    assert store is not None
    store._db.execute("DROP TABLE answers")  # as a damaged file would read
    assert cache.answer(answered("1").request) is None
    cache.offer(answered("2"))
    cache.close()
    assert len(warnings) == 1 and "cannot read the response cache" in warnings[0]


def test_writes_are_batched_and_flushed_when_full(tmp_path: Path) -> None:
    cache, _ = run_cache(tmp_path)
    for row in range(600):
        cache.offer(answered(str(row)))
    assert cache.stats.cache_stored == 512  # one batch went when it was full
    cache.close()
    assert cache.stats.cache_stored == 600


def test_a_plain_request_object_is_enough(tmp_path: Path) -> None:
    cache, _ = run_cache(tmp_path, serve="any")
    request = ChatRequest("9", 0, "9#0", {"model": "m"}, "h9", 1, 1)
    assert cache.answer(request) is None


def test_a_cache_that_cannot_be_written_mid_run_is_dropped_once(tmp_path: Path) -> None:
    cache, warnings = run_cache(tmp_path)
    store = cache._store
    assert store is not None
    store._db.execute("DROP TABLE totals")  # every write now fails, as on a full disk
    cache.offer(answered("1"))
    cache.flush()
    assert not cache.is_open
    assert len(warnings) == 1 and "cannot write to the response cache" in warnings[0]
    cache.offer(answered("2"))
    cache.close()
    assert cache.stats.cache_stored == 0
