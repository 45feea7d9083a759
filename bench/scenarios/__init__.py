"""One module per benchmark scenario; each exposes NAME, TITLE, IN_QUICK and run(ctx)."""

from __future__ import annotations

from types import ModuleType

from scenarios import (
    degrade,
    faults,
    faults_20k,
    faults_s4,
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
    faults_s4,
    faults_20k,
    degrade,
    scale,
    resume,
    kills,
    pool,
    ray_engine,
]
