"""One module per benchmark scenario; each exposes NAME, TITLE, IN_QUICK and run(ctx)."""

from __future__ import annotations

from types import ModuleType

from scenarios import (
    faults,
    kills,
    latency,
    overhead,
    pool,
    rate_limit,
    ray_engine,
    resume,
    scale,
)

ALL: list[ModuleType] = [
    overhead,
    latency,
    rate_limit,
    faults,
    scale,
    resume,
    kills,
    pool,
    ray_engine,
]
