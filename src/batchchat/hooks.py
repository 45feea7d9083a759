"""What a run hands its executor beside the requests: where they go (the endpoint or a
pool), the price of an answer, the budget, the response cache (served before either
executor, fed after the sink) and the re-asker.

Both executors (online and batch) take these as plain callables; building them from a
compiled job is the runner's wiring, kept here so the runner reads as the order of events.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from batchchat.cache.serve import RunCache
from batchchat.execute.budget import Budget
from batchchat.execute.endpoint import open_target, secret_values
from batchchat.execute.pool import PoolSettings, open_pool
from batchchat.execute.reask import Reasker
from batchchat.execute.transport import AiohttpTransport
from batchchat.job import CompiledJob
from batchchat.models import ChatRequest, ChatResponse, ChatResult, ExecutionStats
from batchchat.pricing import PoolPriceTable, PriceTable, tier_of
from batchchat.results.sink import ParquetSink
from batchchat.spec import BudgetSpec, JobSpec

#: one result, and many at once (a batch's output file is written a chunk at a time)
OnResult = Callable[[ChatResult], None]
OnResults = Callable[[list[ChatResult]], None]


@contextlib.asynccontextmanager
async def open_endpoints(
    job: CompiledJob, *, dry_run: bool, on_warning: Callable[[str], None] | None
) -> AsyncIterator[tuple[dict[str, Any], list[AiohttpTransport]]]:
    """Where the requests go, as :func:`~batchchat.execute.executor.execute` takes it -- the
    one endpoint, or the pool -- opened (simulators started), with the transports to close."""
    spec = job.spec
    if spec.endpoints is None:
        async with open_target(spec.endpoint, force_simulator=dry_run) as target:
            transport = AiohttpTransport(spec.endpoint, max_connections=spec.limits.max_concurrency)
            route = {
                "transport": transport,
                "url": target.url,
                "headers": target.headers,
                "endpoint": target.display,
                "cost_of": cost_of(job.prices),
            }
            yield route, [transport]
        return
    members = job.prices.members if isinstance(job.prices, PoolPriceTable) else []
    costs = {prices.member.name: prices.answer_cost for prices in members}
    async with open_pool(
        spec.endpoints,
        limits=spec.limits,
        prices=lambda member: costs.get(member.name),
        force_simulator=dry_run,
    ) as opened:
        pool = PoolSettings(opened, spec.routing, on_warning=on_warning)
        transports = [m.transport for m in opened if isinstance(m.transport, AiohttpTransport)]
        yield {"pool": pool, "endpoint": "the pool"}, transports


def secrets_of(spec: JobSpec) -> frozenset[str]:
    """Every secret a run sends, to be masked wherever it could show."""
    if spec.endpoints is None:
        return secret_values(spec.endpoint)
    return frozenset().union(*(secret_values(member) for member in spec.endpoints))


def budget_of(spec: BudgetSpec | None, prices: PriceTable, stats: ExecutionStats) -> Budget | None:
    """The online executor's budget (None: the job has none)."""
    if spec is None:
        return None
    return Budget(
        spec.max_cost_usd,
        worst_case=prices.worst_case_usd,
        spent=lambda: stats.cost_usd,
    )


def open_cache(
    job: CompiledJob,
    stats: ExecutionStats,
    *,
    dry_run: bool,
    warn: Callable[[str], None],
) -> RunCache | None:
    """The response cache of the job (None: it has none, or this is a rehearsal, whose
    simulated answers must neither be stored for nor served to the real endpoint)."""
    directory, spec = job.spec.cache_dir, job.spec.cache
    if directory is None or spec is None:
        return None
    if dry_run:
        warn("cache: not used by a --dry-run (simulated answers are not the endpoint's)")
        return None
    reask = job.spec.output.reask
    return RunCache(
        spec,
        directory,
        stats,
        # what a hit saved, at the prices this job would have paid (batch prices in batch mode)
        price=cost_of(job.prices, batch=job.spec.mode == "batch"),
        check=job.check,
        reasks=0 if reask is None else reask.count,
        keep_raw=job.spec.output.keep_raw,
        on_warning=warn,
    )


def writing_then_caching(sink: ParquetSink, cache: RunCache) -> tuple[OnResult, OnResults]:
    """The sink's ``write`` and ``write_many``, each then offering the answers to the cache."""

    def on_result(result: ChatResult) -> None:
        sink.write(result)  # the output directory first: the cache is only a saving
        cache.offer(result)

    def on_results(results: list[ChatResult]) -> None:
        sink.write_many(results)
        for result in results:
            cache.offer(result)

    return on_result, on_results


def reasker_of(job: CompiledJob) -> Reasker | None:
    """The online executor's re-asker (None: the job does not re-ask)."""
    reask = job.spec.output.reask
    if reask is None or reask.count == 0 or job.check is None:
        return None
    prices = job.prices

    def price(request: ChatRequest, response: ChatResponse) -> float | None:
        model = response.model or request.body.get("model")
        return prices.cost_usd(model, response.usage, tier_of(request.body))

    return Reasker(reask, job.check, price)


def cost_of(prices: PriceTable, *, batch: bool = False) -> Callable[[ChatResult], float | None]:
    """The cost of a result's answer at its tier's prices (``batch``: at batch prices)."""

    def cost(result: ChatResult) -> float | None:
        response = result.response
        if response is None:
            return None
        model = response.model or result.request.body.get("model")
        tier = tier_of(result.request.body, batch=batch)
        return prices.cost_usd(model, response.usage, tier)

    return cost
