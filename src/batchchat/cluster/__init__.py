"""Running a job on Ray Data: batchchat's own planner, executor and sink, across a cluster.

Only ``batchchat run --engine ray`` (or ``batchchat.run(..., engine="ray")``) imports
:mod:`batchchat.cluster.engine`, and with it Ray; :func:`require_ray` says what to install
when it is missing. The modules: :mod:`~batchchat.cluster.session` (connect or start Ray),
:mod:`~batchchat.cluster.input` (the input as a Ray dataset, each row with its position),
:mod:`~batchchat.cluster.limits` (one rate limit for every worker),
:mod:`~batchchat.cluster.worker` (the actors that plan and send),
:mod:`~batchchat.cluster.sink` (the one writer of the output directory) and
:mod:`~batchchat.cluster.engine` (the driver).
"""

from __future__ import annotations

from dataclasses import dataclass

from batchchat.errors import SpecError

#: what installs the engine's dependencies
INSTALL = "pip install 'batchchat[ray]'"


def require_ray() -> None:
    """Raise a SpecError (exit 2, before anything is sent) when Ray Data is not installed."""
    try:
        import ray.data  # noqa: F401  (what the engine needs; imported only when asked for)
    except ImportError:
        raise SpecError(
            f"--engine ray needs Ray Data, which is not installed here; install it with "
            f"`{INSTALL}` (or run the job without --engine ray, on this machine alone)"
        ) from None


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide a run on Ray goes (``--ray-address``, ``--workers``)."""

    #: a cluster's address (``auto``, ``ray://head:10001``, ``10.0.0.5:6379``); None:
    #: ``RAY_ADDRESS`` if set, else a Ray started on this machine for the run
    address: str | None = None
    #: how many workers (actors) send; None: one per CPU of the cluster
    workers: int | None = None
    #: CPUs of the local Ray a run starts for itself (None: this machine's)
    local_cpus: int | None = None
