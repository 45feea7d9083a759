"""A run's use of the response cache: answer requests from it, and keep the new answers.

:meth:`RunCache.answer` turns a stored answer into a normal result row, marked
``cached``, its cost 0 and the cost it saved priced at this job's prices; the runner
writes it like any other result, so resume, reports and ``read_results`` see nothing
new. :meth:`RunCache.offer` keeps a complete answer the job paid for. Writes and hit
counts are gathered and committed together (:meth:`RunCache.flush`, on the sink's
beat): one transaction per batch, not per row.

The cache only ever saves money: when it cannot be read or written (a damaged file, a
full disk) the run says so once and goes on without it, every row sent as usual.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson

from batchchat.cache.codec import completion_object, decode_response, encode_response
from batchchat.cache.policy import cache_key, is_storable, may_serve
from batchchat.cache.store import Hit, NewEntry, ResponseStore, cache_exists
from batchchat.errors import CacheError
from batchchat.execute.reask import AnswerCheck
from batchchat.models import ChatRequest, ChatResponse, ChatResult, ExecutionStats
from batchchat.spec import CacheSpec

#: answers gathered before they are written even without a flush
_BATCH = 512

Pricer = Callable[[ChatResult], float | None]


class RunCache:
    """The response cache as one run uses it."""

    def __init__(
        self,
        spec: CacheSpec,
        directory: Path,
        stats: ExecutionStats,
        *,
        price: Pricer,
        check: AnswerCheck | None = None,
        reasks: int = 0,
        keep_raw: bool = False,
        on_warning: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.spec = spec
        self.directory = directory
        self.stats = stats
        self._price = price
        #: a stored answer failing it is sent again when this job would re-ask it more
        #: than the row that stored it was (``output.reask.count``)
        self._check = check if reasks else None
        self._reasks = reasks
        self._keep_raw = keep_raw
        self._warn = on_warning
        self._writable = spec.mode == "read-write"
        self._entries: list[NewEntry] = []
        self._hits: list[Hit] = []
        self._store = self._open()

    def _open(self) -> ResponseStore | None:
        read_only = not self._writable
        if read_only and not cache_exists(self.directory):
            self._warn(f"cache: no response cache in {self.directory} yet (read-only): none used")
            return None
        try:
            return ResponseStore(self.directory, read_only=read_only)
        except CacheError as exc:
            self._warn(f"cache: {exc}; this run goes on without it")
            return None

    @property
    def is_open(self) -> bool:
        return self._store is not None

    # -- serving ----------------------------------------------------------------------------

    def serve(
        self, requests: Iterable[ChatRequest], on_hit: Callable[[ChatResult], None]
    ) -> Iterator[ChatRequest]:
        """``requests`` minus those the cache answers, whose result rows go to ``on_hit``."""
        for request in requests:
            hit = self.answer(request)
            if hit is None:
                yield request
            else:
                self.stats.results_ok += 1
                on_hit(hit)

    def answer(self, request: ChatRequest) -> ChatResult | None:
        """The stored answer to ``request`` as a result row, or None (send it)."""
        store = self._store
        if store is None or not may_serve(self.spec, request):
            return None
        key = cache_key(request)
        try:
            stored = store.get(key)
        except CacheError as exc:
            self._give_up(exc)
            return None
        response = None if stored is None else decode_response(stored.body)
        if stored is None or response is None:
            return None
        if self._may_fix(request, response, stored.reasks):
            return None  # sending it and re-asking beats serving an answer that fails
        return self._served(request, response, key, stored.reask_cost_usd)

    def _may_fix(self, request: ChatRequest, response: ChatResponse, reasks: int) -> bool:
        """Whether this job would re-ask a stored answer that fails its check further than
        the row that stored it did (one as re-asked as this job would re-ask it is served:
        a deterministic request would only repeat the same asks, paid twice)."""
        if self._check is None or reasks >= self._reasks:
            return False
        return self._check(request, response) is not None

    def _served(
        self, request: ChatRequest, response: ChatResponse, key: str, reasks_usd: float
    ) -> ChatResult:
        """The hit as a result row; it saved the answer, and the re-asks that reached it."""
        if self._keep_raw:
            response = _with_raw(response)
        now = datetime.now(UTC)
        result = ChatResult(
            request=request,
            response=response,
            error=None,
            http_status=None,  # nothing was sent
            attempts=0,
            latency_ms=0.0,
            started_at=now,
            finished_at=now,
            cached=True,
        )
        priced = self._price(result)
        saved = None if priced is None else priced + reasks_usd
        result.cost_usd = 0.0
        result.cost_saved_usd = saved
        self._hits.append(Hit(key, saved or 0.0))
        self.stats.cache_hits += 1
        self.stats.cache_saved_usd += saved or 0.0
        self._flush_when_full()
        return result

    # -- storing ----------------------------------------------------------------------------

    def offer(self, result: ChatResult) -> None:
        """Keep ``result``'s answer if it is complete and this job may be served it."""
        response = result.response
        if (
            self._store is None
            or not self._writable
            or result.cached
            or result.error is not None
            or response is None
            or not may_serve(self.spec, result.request)
            or not is_storable(self.spec, response)
        ):
            return
        body = encode_response(response)
        key = cache_key(result.request)
        earlier = [cost for cost in (result.ask_costs_usd or [])[:-1] if cost is not None]
        entry = NewEntry(key, body, response.model, result.cost_usd, result.reasks, sum(earlier))
        self._entries.append(entry)
        self._flush_when_full()

    # -- writing ----------------------------------------------------------------------------

    def _flush_when_full(self) -> None:
        if len(self._entries) + len(self._hits) >= _BATCH:
            self.flush()

    def flush(self) -> None:
        """Write the gathered answers and hit counts (one transaction each)."""
        store = self._store
        entries, hits, self._entries, self._hits = self._entries, self._hits, [], []
        if store is None or not self._writable:
            return
        try:
            stored, _ = store.put_many(entries, max_bytes=self.spec.max_bytes)
            store.record_hits(hits)
        except CacheError as exc:
            self._give_up(exc)
            return
        self.stats.cache_stored += stored

    def close(self) -> None:
        self.flush()
        if self._store is not None:
            self._store.close()
            self._store = None

    def _give_up(self, exc: CacheError) -> None:
        self._warn(f"cache: {exc}; this run goes on without it")
        if self._store is not None:
            self._store.close()
        self._store = None


def _with_raw(response: ChatResponse) -> ChatResponse:
    """``response`` with its stored form as the raw response (``output.keep_raw``)."""
    return dataclasses.replace(response, raw=orjson.dumps(completion_object(response)).decode())
