"""Ray for one run: connect to the cluster asked for, or start a small local one.

A run given ``--ray-address`` (or ``RAY_ADDRESS``) joins that cluster and leaves it as it
found it. Otherwise it starts Ray on this machine for itself -- no dashboard, no usage
statistics, nothing printed but batchchat's own progress -- and stops it at the end. A
Ray already started in this process (a notebook's ``ray.init()``, a test session's) is
used as it is and left running.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import ray
import ray.data

from batchchat.cluster import RayOptions
from batchchat.errors import SpecError


@contextmanager
def ray_session(options: RayOptions) -> Iterator[None]:
    """Ray, ready for a run, for the length of the ``with`` block."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray's own notices (token authentication, deprecations) mean nothing to a batchchat
    # user and would break into the progress display; its errors still show
    logging.getLogger("ray").setLevel(logging.ERROR)
    started = False
    if not ray.is_initialized():
        address = options.address or os.environ.get("RAY_ADDRESS") or None
        _init(address, options.local_cpus)
        started = True
    _quiet_data()
    try:
        yield
    finally:
        if started:
            ray.shutdown()


#: how long a cluster's address may take to accept a connection
CONNECT_S = 5.0


def check_address(options: RayOptions) -> None:
    """A SpecError at once (before the output directory is touched) when the cluster's
    address takes no connection: Ray itself would retry for minutes, printing as it goes."""
    address = options.address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized() or address is None or address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise SpecError(
            f"--ray-address {address}: not an address of a Ray cluster; give host:port "
            "(the head's GCS, 6379 by default), ray://host:port (Ray Client, 10001) or auto"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_S).close()
    except OSError as exc:
        raise SpecError(
            f"--ray-address {address}: no Ray cluster answers there ({exc.strerror or exc}); "
            "start one with `ray start --head`, or leave the address out to start Ray on "
            "this machine"
        ) from None


def _init(address: str | None, local_cpus: int | None) -> None:
    cpus = None if address is not None else local_cpus or os.cpu_count() or 1
    try:
        ray.init(
            address=address,
            num_cpus=cpus,
            # a cluster's own dashboard is its own business: only a local Ray goes without
            include_dashboard=False if address is None else None,
            log_to_driver=False,
            logging_level=logging.WARNING,
            configure_logging=False,
        )
    except ConnectionError as exc:
        raise SpecError(
            f"--ray-address {address}: no Ray cluster answers there ({exc}); start one with "
            "`ray start --head`, or leave the address out to start Ray on this machine"
        ) from None


def _quiet_data() -> None:
    """Ray Data's progress bars and start/finish lines would mix with batchchat's progress."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # it keeps a level of its own


def cluster_cpus() -> int:
    """How many CPUs the cluster has (at least 1)."""
    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    return max(1, int(resources.get("CPU", 1)))
