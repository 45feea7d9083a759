"""Endpoint pools: ``endpoints:``, several endpoints for one job, and ``routing:``, how rows
are spread over them.

A pool member is an :class:`EndpointSpec` (base URL, key variable, headers, timeouts, the
simulator's knobs) plus what a pool needs: a short stable ``name`` (recorded on every
result row and in the report), a ``model`` mapping (the request's model name → this
endpoint's name for it, e.g. an Azure deployment), a ``weight``, a ``priority`` (its
tier: 1 is tried first), its own ``limits`` (over the job's) and its own ``pricing``.

What a pool means for resume (a deliberate choice, see docs/pools.md): a row asks the same
question whichever member answers it, so the request fingerprint of a pool job counts the
request, never its members -- adding or removing a member, or moving one to another URL,
resumes as usual. A member's ``model`` mapping does change what that member is sent, so
it is recorded per member name, and a resume is refused when a member that was there
before maps a model differently (:func:`mapping_changes`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field, field_validator

from batchchat.spec.base import Strict
from batchchat.spec.endpoint import EndpointSpec, without_password
from batchchat.spec.sections import LimitsSpec, PriceSpec

#: what a pool job's fingerprint (and each request hash) has where a single endpoint has
#: its base_url: the members may change between runs, the requests do not
POOL = "pool"
#: a member's name: short, printable anywhere (a column value, a log line, a file name)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")


class EndpointLimitsSpec(Strict):
    """One endpoint's own limits (it learns tighter ones from its own headers and 429s); a
    key left out (or null) keeps the job's ``limits:`` value."""

    #: requests per minute at this endpoint
    #: default: the job's ``limits.rpm``
    rpm: int | None = Field(default=None, gt=0)
    #: tokens per minute at this endpoint
    #: default: the job's ``limits.tpm``
    tpm: int | None = Field(default=None, gt=0)
    #: requests (and HTTP connections) in flight at once at this endpoint
    #: default: the job's ``limits.max_concurrency``
    max_concurrency: int | None = Field(default=None, gt=0, le=4096)
    #: adapt this endpoint's concurrency to its 429s, 503s and timeouts
    #: default: the job's ``limits.adaptive``
    adaptive: bool | None = None

    def over(self, job: LimitsSpec) -> LimitsSpec:
        """The job's limits with the keys this member set in place of them."""
        own = {key: value for key, value in self.model_dump().items() if value is not None}
        return job.model_copy(update=own)


class PoolEndpointSpec(EndpointSpec):
    """One endpoint of a pool (an item of ``endpoints:``): every key of ``endpoint``, plus
    its name, model mapping, weight, tier, limits and prices (see [Endpoint
    pools](../pools.md))."""

    #: a short stable name (up to 32 letters, digits, ``_``, ``.``, ``-``), unique in the
    #: pool: the ``endpoint`` column and the report say it; never a URL or a key
    name: str
    #: the request's model name → this endpoint's name for it (an Azure deployment); other
    #: models are sent as they are
    model: dict[str, str] = Field(default_factory=dict)
    #: its share of the rows among the endpoints of its tier that have room
    weight: float = Field(default=1.0, gt=0)
    #: its tier: every endpoint of priority 1 is tried before any of priority 2, and so on
    priority: int = Field(default=1, ge=1)
    #: its own limits, over the job's ``limits:``
    #: default: the job's ``limits:``
    limits: EndpointLimitsSpec | None = None
    #: prices of what this endpoint answers, over the job's ``pricing:`` and the built-in
    #: table (same shape as ``pricing:``)
    pricing: dict[str, PriceSpec] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _is_a_short_name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(
                "must be a short name (up to 32 letters, digits, '_', '.', '-'; starting with "
                f"a letter or digit), such as openai-a or local; got {value!r}"
            )
        return value

    @field_validator("model")
    @classmethod
    def _maps_names_to_names(cls, value: dict[str, str]) -> dict[str, str]:
        for source, target in value.items():
            if not str(source).strip() or not str(target).strip():
                raise ValueError(
                    "maps a model name to this endpoint's name for it; got an empty one"
                )
        return value

    def limits_over(self, job: LimitsSpec) -> LimitsSpec:
        """This member's limits: its own keys over the job's ``limits:``."""
        return job if self.limits is None else self.limits.over(job)

    def sent_model(self, model: object) -> object:
        """The model name this member is sent for the request's ``model``."""
        return self.model.get(model, model) if isinstance(model, str) else model


class RoutingSpec(Strict):
    """How a pool spreads rows over its members, and how it treats a failing one."""

    #: keep a row (``row``) or a prompt prefix (``prefix``) on the same endpoint, so a
    #: provider's prompt cache stays warm; ``none``: weighted choice each time
    sticky: Literal["none", "row", "prefix"] = "none"
    #: with ``sticky: prefix``: how many characters of the messages make the prefix
    prefix_chars: int = Field(default=2000, gt=0)
    #: consecutive failures (5xx, timeouts, dropped or refused connections) that put an
    #: endpoint out of the pool for a while
    failures: int = Field(default=5, gt=0)
    #: the first time out, seconds; each failed probe after it doubles it
    cooldown_s: float = Field(default=5.0, gt=0)
    #: the longest time out, seconds
    max_cooldown_s: float = Field(default=300.0, gt=0)


def check_members(endpoints: Sequence[PoolEndpointSpec]) -> None:
    """A pool has at least one member, and each name once (ValueError otherwise)."""
    if not endpoints:
        raise ValueError("a pool needs at least one endpoint (or use endpoint: for one)")
    seen: set[str] = set()
    for member in endpoints:
        if member.name.lower() in seen:
            raise ValueError(f"the name {member.name!r} is used twice: each endpoint needs its own")
        seen.add(member.name.lower())


def check_currencies(endpoints: Sequence[PoolEndpointSpec], rates: Mapping[str, float]) -> None:
    """Every member price in another currency than USD has a rate (ValueError otherwise)."""
    for member in endpoints:
        for model, price in member.pricing.items():
            if price.currency != "USD" and price.currency not in rates:
                raise ValueError(
                    f"endpoints[{member.name}].pricing.{model} is in {price.currency}: add "
                    f"currency_rates: {{{price.currency}: <USD per {price.currency}>}}"
                )


def endpoint_identity(endpoint: EndpointSpec, endpoints: Sequence[PoolEndpointSpec] | None) -> str:
    """What stands for the endpoint in the request fingerprint and in each request hash:
    the single endpoint's base_url, or :data:`POOL` (the members may change between runs)."""
    return endpoint.base_url if endpoints is None else POOL


def model_mappings(endpoints: Sequence[PoolEndpointSpec] | None) -> dict[str, dict[str, str]]:
    """Each member's ``model`` mapping, by name (what the manifest records)."""
    return {member.name: dict(member.model) for member in endpoints or ()}


def mapping_changes(
    before: Mapping[str, Mapping[str, str]], now: Mapping[str, Mapping[str, str]]
) -> list[str]:
    """One line per model that a member present in both runs now maps differently.

    Members added or removed are no change: they send the same requests as the others.
    """
    lines = []
    for name in sorted(set(before) & set(now)):
        old, new = before[name], now[name]
        for model in sorted(set(old) | set(new)):
            if old.get(model, model) != new.get(model, model):
                lines.append(
                    f"endpoints[{name}].model.{model}: {old.get(model, model)!r} → "
                    f"{new.get(model, model)!r}"
                )
    return lines


def redact_members(dumped: list[dict[str, Any]], endpoints: Sequence[PoolEndpointSpec]) -> None:
    """Mask the secrets of dumped members in place: a simulator key, secret-looking header
    values written literally, a password in a URL."""
    for data, member in zip(dumped, endpoints, strict=True):
        simulator = data.get("simulator")
        if simulator and simulator.get("api_key"):
            simulator["api_key"] = "***"
        for header in member.literal_secret_headers():
            data["headers"][header] = "***"
        data["base_url"] = without_password(member.base_url)


def tiers(endpoints: Sequence[PoolEndpointSpec]) -> list[list[PoolEndpointSpec]]:
    """The members grouped by priority, the first tier first (spec order within a tier)."""
    levels = sorted({member.priority for member in endpoints})
    return [[m for m in endpoints if m.priority == level] for level in levels]
