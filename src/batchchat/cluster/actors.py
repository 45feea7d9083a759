"""The engine's parts as Ray actors, and the clients the workers reach them through.

- the **coordinator** (:class:`~batchchat.cluster.limits.Coordinator`), a named async
  actor per run: ``batchchat-limits-<run id>`` in the ``batchchat`` namespace;
- the **writer** (:class:`~batchchat.cluster.sink.ResultWriter`), placed on the driver's
  node, where the output directory is;
- the **workers**: :class:`RowSender`, the ``map_batches`` callable, one per actor of the
  pool, each holding a :class:`~batchchat.cluster.worker.WorkerEngine`.

The coordinator and the writer take no CPU from the cluster's count: they wait on I/O.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from batchchat.cluster.limits import Coordinator, Watch
from batchchat.cluster.sink import ResultWriter
from batchchat.cluster.worker import WorkerEngine, WorkerSetup
from batchchat.planning.source import InputSource
from batchchat.spec import JobSpec

#: the namespace of the run's named actors
NAMESPACE = "batchchat"

_CoordinatorActor = ray.remote(num_cpus=0)(Coordinator)
_WriterActor = ray.remote(num_cpus=0)(ResultWriter)


def start_coordinator(run_id: str) -> Any:
    """The run's coordinator, named after the run (``ray.get_actor`` finds it by that name)."""
    return _CoordinatorActor.options(
        name=f"batchchat-limits-{run_id}", namespace=NAMESPACE
    ).remote()


def start_writer(
    results_dir: Path, spec: JobSpec, source: InputSource, *, run_id: str, secrets: frozenset[str]
) -> Any:
    """The run's one writer, on this (the driver's) node: the output directory is here."""
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return _WriterActor.options(
        name=f"batchchat-writer-{run_id}", namespace=NAMESPACE, scheduling_strategy=here
    ).remote(results_dir, spec, source, run_id=run_id, secrets=secrets, driver_pid=os.getpid())


class RayCoordinator:
    """A worker's :class:`~batchchat.cluster.limits.CoordinatorClient` over the actor."""

    def __init__(self, actor: Any) -> None:
        self._actor = actor

    async def lease(
        self, kind: str, per_minute: float, need: float, want: float
    ) -> tuple[float, float]:
        granted: tuple[float, float] = await self._actor.lease.remote(kind, per_minute, need, want)
        return granted

    async def watch(self, hold_until: float, stop: str | None) -> Watch:
        news: Watch = await self._actor.watch.remote(hold_until, stop)
        return news

    def give_back(self, kind: str, per_minute: float, amount: float) -> None:
        self._actor.give_back.remote(kind, per_minute, amount)

    def hold(self, until: float) -> None:
        self._actor.hold.remote(until)

    async def lease_budget(self, max_cost_usd: float, need: float, want: float) -> float:
        granted: float = await self._actor.lease_budget.remote(max_cost_usd, need, want)
        return granted

    def give_back_budget(self, usd: float) -> None:
        self._actor.give_back_budget.remote(usd)

    def report(self, worker: str, counters: bytes) -> None:
        self._actor.report.remote(worker, counters)

    def stop(self, reason: str, message: str | None = None, error: str | None = None) -> None:
        self._actor.stop.remote(reason, message, error)


class RayWriter:
    """A worker's way to the run's writer actor."""

    def __init__(self, actor: Any) -> None:
        self._actor = actor

    async def write(self, table: pa.Table) -> int:
        rows: int = await self._actor.write.remote(table)
        return rows


class RowSender:
    """The ``map_batches`` callable: each actor of the pool plans and sends its batches."""

    def __init__(self, setup: Any, coordinator: Any, writer: Any) -> None:
        resolved: WorkerSetup = ray.get(setup) if isinstance(setup, ray.ObjectRef) else setup
        name = f"{os.uname().nodename}:{os.getpid()}"
        self._engine = WorkerEngine(
            resolved, RayCoordinator(coordinator), RayWriter(writer), name=name
        )

    async def __call__(self, batch: pa.Table) -> pa.Table:
        return await self._engine.process(batch)
