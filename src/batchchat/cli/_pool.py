"""How ``validate`` and ``plan`` show a pool of endpoints: one line for the pool, one per
member -- names, URLs without passwords, tiers, weights, limits, model mappings, whether
each key variable is set. Never a key."""

from __future__ import annotations

import os
from collections.abc import Iterator

from batchchat.spec import JobSpec, LimitsSpec, PoolEndpointSpec, SimulatorSpec
from batchchat.spec.endpoint import without_password
from batchchat.spec.pool import tiers


def pool_rows(spec: JobSpec) -> Iterator[tuple[str, str]]:
    """("endpoints", the pool in one line), then ("  <name>", the member) per member."""
    members = spec.endpoints or []
    routing = spec.routing
    levels = len(tiers(members))
    choice = "weighted" if routing.sticky == "none" else f"sticky by {routing.sticky}"
    yield (
        "endpoints",
        f"a pool of {len(members)} in {levels} tier{'s' if levels > 1 else ''} (tier 1 first); "
        f"{choice}; out for {routing.cooldown_s:g}–{routing.max_cooldown_s:g}s after "
        f"{routing.failures} failures in a row",
    )
    for member in members:
        yield f"  {member.name}", describe_member(member, spec.limits)


def describe_member(member: PoolEndpointSpec, job_limits: LimitsSpec) -> str:
    """One member: where, its place in the pool, its key (set or not), limits, models."""
    where = (
        "built-in simulator" + _simulator_knobs(member.simulator)
        if member.is_simulator
        else without_password(member.base_url)
    )
    parts = [where, f"tier {member.priority}, weight {member.weight:g}", _key(member)]
    parts.append(describe_limits(member.limits_over(job_limits)))
    parts += [f"model {source} → {target}" for source, target in member.model.items()]
    if member.pricing:
        parts.append("own prices for " + ", ".join(member.pricing))
    if member.headers:
        parts.append("extra headers: " + ", ".join(sorted(member.headers)))
    return "; ".join(parts)


def describe_limits(limits: LimitsSpec) -> str:
    rpm = f"{limits.rpm:,} rpm" if limits.rpm else "no rpm limit"
    tpm = f"{limits.tpm:,} tpm" if limits.tpm else "no tpm limit"
    return f"{rpm}, {tpm}, {limits.max_concurrency} concurrent"


def _key(member: PoolEndpointSpec) -> str:
    if member.api_key_env:
        present = "set" if os.environ.get(member.api_key_env) else "NOT set: export it before run"
        return f"key from ${member.api_key_env} ({present})"
    simulator = member.simulator
    return "the simulator's own key" if simulator and simulator.api_key else "no key"


def _simulator_knobs(simulator: SimulatorSpec | None) -> str:
    """What makes a simulator member differ from the defaults, briefly."""
    if simulator is None:
        return ""
    knobs = [f"{name} {value:,}" for name in ("rpm", "tpm") if (value := getattr(simulator, name))]
    faults = simulator.faults.model_dump(include=_FAULT_RATES)
    knobs += [f"{name} {rate:.0%}" for name, rate in faults.items() if rate]
    if simulator.latency.mean_ms:
        knobs.append(f"{simulator.latency.mean_ms:g} ms")
    return f" ({', '.join(knobs)})" if knobs else ""


_FAULT_RATES = {"http_500", "http_502", "http_503", "http_429", "drop", "stall", "truncate"}
