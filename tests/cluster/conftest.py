"""One local Ray for every test that needs one: starting Ray costs seconds."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests._system import ray_installed


@pytest.fixture(scope="session")
def local_ray() -> Iterator[None]:
    """A Ray of 2 CPUs on this machine, no dashboard, no usage statistics (the engine uses a
    Ray already started, and leaves it running)."""
    ray_installed()
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()
