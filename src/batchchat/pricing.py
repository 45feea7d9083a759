"""Model prices → cost in USD of a result's usage, and cost bounds of a request before it is sent.

The built-in table (``prices.yaml``, shipped in the package) is extended or
overridden by the spec's ``pricing:``; everything is converted to USD once, when
the table is built. A model without a price, or a response without usage, costs
``None`` -- never a silent zero: the report counts those rows and warns.

Model names match exactly, then as an entry plus a snapshot suffix (longest entry
wins), then without a gateway namespace; the rules are spelled out in the header
of ``prices.yaml`` and in :meth:`PriceTable.lookup`.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from batchchat.models import ChatRequest, ChatResponse, ChatResult, Usage
from batchchat.spec import JobSpec, PoolEndpointSpec, PriceSpec

PER_TOKENS = 1_000_000
#: how a request is billed: at list prices, through the Batch API, or as flex processing
Tier = Literal["standard", "batch", "flex"]
STANDARD: Tier = "standard"
#: parts of a model name after an entry's name that only name a snapshot of it
_SNAPSHOT_PART = re.compile(r"\d{2,}|latest|preview|exp")


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per 1M tokens of one model (see ``prices.yaml`` for what each field covers)."""

    #: the table entry that matched (a model name or family)
    model: str
    input: float
    output: float
    #: None: cached prompt tokens cost the same as the rest of the prompt
    cached_input: float | None = None
    #: None: reasoning tokens are completion tokens, billed as output
    reasoning: float | None = None
    #: billed for every completion token when a response reports reasoning tokens
    thinking_output: float | None = None
    #: where the price comes from: "spec" or the built-in provider's name
    source: str = "spec"
    #: the share of these prices a Batch API line costs (None: no batch price known)
    batch: float | None = None
    #: the share of these prices a flex request costs (None: no flex price known)
    flex: float | None = None

    def at_tier(self, tier: Tier) -> ModelPrice | None:
        """This price as billed at ``tier`` (None when the tier has no known price); cached
        and reasoning rates get the same discount, as OpenAI's batch prices do."""
        if tier == STANDARD:
            return self
        share = self.batch if tier == "batch" else self.flex
        return None if share is None else self.converted(share)

    def cost_usd(self, usage: Usage) -> float | None:
        """Cost of one response's usage; None when the server did not report the counts."""
        if usage.prompt_tokens is None or usage.completion_tokens is None:
            return None
        prompt, completion = usage.prompt_tokens, usage.completion_tokens
        cached = min(max(usage.cached_tokens or 0, 0), prompt)
        reasoning = min(max(usage.reasoning_tokens or 0, 0), completion)
        cached_price = self.input if self.cached_input is None else self.cached_input
        amount = (prompt - cached) * self.input + cached * cached_price
        if reasoning and self.thinking_output is not None:
            amount += completion * self.thinking_output
        elif reasoning and self.reasoning is not None:
            amount += (completion - reasoning) * self.output + reasoning * self.reasoning
        else:
            amount += completion * self.output
        return amount / PER_TOKENS

    @property
    def max_output(self) -> float:
        """The dearest rate a completion token can be billed at (for worst-case bounds)."""
        rates = (self.output, self.reasoning or 0.0, self.thinking_output or 0.0)
        return max(rates)

    def converted(self, usd_per_unit: float) -> ModelPrice:
        """The same price in USD, given the USD value of one unit of its currency."""

        def scale(value: float | None) -> float | None:
            return None if value is None else value * usd_per_unit

        return replace(
            self,
            input=self.input * usd_per_unit,
            output=self.output * usd_per_unit,
            cached_input=scale(self.cached_input),
            reasoning=scale(self.reasoning),
            thinking_output=scale(self.thinking_output),
        )


class PriceTable:
    """Prices by model name, in USD per 1M tokens, with the documented matching rules."""

    def __init__(self, prices: Mapping[str, ModelPrice]) -> None:
        #: lower-cased entry name → price in USD
        self._prices = {name.lower(): price for name, price in prices.items()}
        #: (model name as asked, tier) → what lookup found: a run asks for a few names
        #: a million times
        self._found: dict[tuple[str, Tier], ModelPrice | None] = {}

    @classmethod
    def from_spec(cls, spec: JobSpec) -> PriceTable:
        """The built-in table plus the spec's ``pricing:``, converted with its currency rates
        (a :class:`PoolPriceTable` for a pool of endpoints)."""
        if spec.endpoints is not None:
            return PoolPriceTable(
                cls._for(spec, spec.endpoint.base_url),
                [MemberPrices.from_spec(spec, member) for member in spec.endpoints],
            )
        return cls._for(spec, spec.endpoint.base_url)

    @classmethod
    def _for(
        cls, spec: JobSpec, base_url: str, extra: Mapping[str, PriceSpec] | None = None
    ) -> PriceTable:
        rates = tuple(sorted(spec.currency_rates.items()))
        prices = dict(_builtin_prices(_host_of(base_url), rates))
        for name, price in {**spec.pricing, **(extra or {})}.items():
            prices[name.lower()] = _from_price_spec(name, price, dict(rates))
        return cls(prices)

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and model.lower() in self._prices

    def lookup(self, model: str | None, tier: Tier = STANDARD) -> ModelPrice | None:
        """The price of a model name at ``tier``, or None when no entry matches.

        1. the exact (lower-cased) name;
        2. an entry followed by ``-`` and only snapshot parts (digit groups, ``latest``,
           ``preview``, ``exp``); the longest such entry wins;
        3. both again without a gateway namespace (``openai/gpt-4o`` → ``gpt-4o``).
        """
        if not model:
            return None
        if (model, tier) in self._found:
            return self._found[(model, tier)]
        name = model.strip().lower()
        found = self._match(name)
        if found is None and "/" in name:
            found = self._match(name.rsplit("/", 1)[1])
        price = None if found is None else found.at_tier(tier)
        self._found[(model, tier)] = price
        return price

    def _match(self, name: str) -> ModelPrice | None:
        exact = self._prices.get(name)
        if exact is not None:
            return exact
        parts = name.split("-")
        # try the longest candidate entry first: "gpt-4o-mini" before "gpt-4o"
        for cut in range(len(parts) - 1, 0, -1):
            if all(_SNAPSHOT_PART.fullmatch(part) for part in parts[cut:]):
                price = self._prices.get("-".join(parts[:cut]))
                if price is not None:
                    return price
        return None

    def cost_usd(self, model: str | None, usage: Usage, tier: Tier = STANDARD) -> float | None:
        """Cost of one response; None when the model has no price or the usage is unknown."""
        price = self.lookup(model, tier)
        return None if price is None else price.cost_usd(usage)

    def request_cost_bounds(
        self, request: ChatRequest, tier: Tier = STANDARD
    ) -> tuple[float, float] | None:
        """(low, high) USD of a request before it is sent; None when its model has no price.

        low: the estimated prompt all served from the provider's prompt cache (at the cached
        price, where the model has one) and a one-token answer per choice;
        high: the estimated prompt at the full input price plus every allowed output token
        at the dearest output rate.
        """
        price = self.lookup(_model_of(request), tier)
        return None if price is None else _bounds(price, request)

    def worst_case_usd(self, request: ChatRequest, tier: Tier = STANDARD) -> float | None:
        """The most a request can cost (the high bound): what the budget reserves in flight."""
        bounds = self.request_cost_bounds(request, tier)
        return None if bounds is None else bounds[1]

    def models(self) -> list[str]:
        """The entry names, sorted."""
        return sorted(self._prices)


# -- pools of endpoints ------------------------------------------------------------------------


class MemberPrices:
    """One pool member's prices: its own ``pricing:`` first, under the model name it is sent
    (an Azure deployment) or answers with; then the built-ins for its host and the job's
    ``pricing:``, as for a single endpoint."""

    def __init__(self, member: PoolEndpointSpec, table: PriceTable, own: PriceTable) -> None:
        self.member = member
        self._table = table
        self._own = own

    @classmethod
    def from_spec(cls, spec: JobSpec, member: PoolEndpointSpec) -> MemberPrices:
        rates = dict(spec.currency_rates)
        own = {name: _from_price_spec(name, p, rates) for name, p in member.pricing.items()}
        return cls(member, PriceTable._for(spec, member.base_url, member.pricing), PriceTable(own))

    def price(
        self, sent: str | None, answered: str | None = None, tier: Tier = STANDARD
    ) -> ModelPrice | None:
        """The price of an answer to a request sent as ``sent`` (answered as ``answered``),
        billed at ``tier`` (flex processing is online, so a pool member may be asked for it)."""
        for name in (sent, answered):
            own = self._own.lookup(name, tier)
            if own is not None:
                return own
        return self._table.lookup(answered or sent, tier) or self._table.lookup(sent, tier)

    def cost_of(self, result: ChatResult) -> float | None:
        """Cost of one result this member answered (None: no price, or no usage)."""
        if result.response is None:
            return None
        return self.answer_cost(result.request, result.response)

    def answer_cost(self, request: ChatRequest, response: ChatResponse) -> float | None:
        """Cost of one answer it gave to ``request`` (None: no price, or no usage)."""
        price = self.price(self._sent(request), response.model, tier_of(request.body))
        return None if price is None else price.cost_usd(response.usage)

    def request_cost_bounds(
        self, request: ChatRequest, tier: Tier = STANDARD
    ) -> tuple[float, float] | None:
        price = self.price(self._sent(request), tier=tier)
        return None if price is None else _bounds(price, request)

    def _sent(self, request: ChatRequest) -> str | None:
        model = self.member.sent_model(request.body.get("model"))
        return model if isinstance(model, str) else None


class PoolPriceTable(PriceTable):
    """A pool's prices: a request costs what the member answering it charges, so before it
    is sent its bounds span the members' (the cheapest low, the dearest high)."""

    def __init__(self, job: PriceTable, members: list[MemberPrices]) -> None:
        super().__init__({})
        self._prices = job._prices
        self.members = members

    def request_cost_bounds(
        self, request: ChatRequest, tier: Tier = STANDARD
    ) -> tuple[float, float] | None:
        found = (m.request_cost_bounds(request, tier) for m in self.members)
        bounds = [b for b in found if b is not None]
        if not bounds:
            return None
        return min(low for low, _ in bounds), max(high for _, high in bounds)


# -- the built-in table ------------------------------------------------------------------------


@functools.cache
def builtin_table() -> dict[str, Any]:
    """``prices.yaml`` as plain data (read once from the installed package)."""
    text = importlib.resources.files("batchchat").joinpath("prices.yaml").read_text("utf-8")
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or not isinstance(data.get("providers"), dict):
        raise ValueError("batchchat/prices.yaml: expected a mapping with 'providers'")
    return data


@functools.cache
def _builtin_prices(
    host: str | None, rate_overrides: tuple[tuple[str, float], ...]
) -> dict[str, ModelPrice]:
    data = builtin_table()
    rates = {**data.get("currency_rates", {}), **dict(rate_overrides)}
    general: dict[str, ModelPrice] = {}
    regional: dict[str, ModelPrice] = {}
    for provider, block in data["providers"].items():
        hosts = block.get("hosts")
        if hosts and not _host_matches(host, hosts):
            continue
        usd_per_unit = _rate(rates, block.get("currency", "USD"), f"provider {provider}")
        target = regional if hosts else general
        shares = {tier: block[tier] for tier in ("batch", "flex") if tier in block}
        for name, fields in block["models"].items():
            price = ModelPrice(model=str(name), source=str(provider), **{**shares, **fields})
            target[str(name).lower()] = price.converted(usd_per_unit)
    return {**general, **regional}


def _from_price_spec(name: str, price: PriceSpec, rates: Mapping[str, float]) -> ModelPrice:
    usd_per_unit = _rate(rates, price.currency, f"pricing.{name}")
    return ModelPrice(
        model=name,
        input=price.input,
        output=price.output,
        cached_input=price.cached_input,
        reasoning=price.reasoning,
        source="spec",
        batch=price.batch,
        flex=price.flex,
    ).converted(usd_per_unit)


def _rate(rates: Mapping[str, float], currency: str, where: str) -> float:
    if currency == "USD":
        return 1.0
    if currency not in rates:
        raise ValueError(f"{where} is in {currency}: add currency_rates: {{{currency}: <USD>}}")
    return float(rates[currency])


def _host_of(base_url: str | None) -> str | None:
    if not base_url or "://" not in base_url:
        return None
    return (urlsplit(base_url).hostname or "").lower() or None


def _host_matches(host: str | None, hosts: Iterable[str]) -> bool:
    return host is not None and any(host == h or host.endswith("." + h) for h in hosts)


def tier_of(body: dict[str, Any], *, batch: bool = False) -> Tier:
    """How a request with this body is billed: batch mode, flex processing, or list prices."""
    if batch:
        return "batch"
    return "flex" if body.get("service_tier") == "flex" else STANDARD


def _bounds(price: ModelPrice, request: ChatRequest) -> tuple[float, float]:
    """(low, high) USD of ``request`` at ``price`` (see :meth:`PriceTable.request_cost_bounds`)."""
    prompt = request.est_prompt_tokens * price.input
    cheapest = price.input if price.cached_input is None else min(price.cached_input, price.input)
    choices = _choices_of(request)
    low = request.est_prompt_tokens * cheapest + choices * price.output
    high = prompt + max(request.max_output_tokens, choices) * price.max_output
    return low / PER_TOKENS, high / PER_TOKENS


def _model_of(request: ChatRequest) -> str | None:
    model = request.body.get("model")
    return model if isinstance(model, str) else None


def _choices_of(request: ChatRequest) -> int:
    n = request.body.get("n", 1)
    return n if isinstance(n, int) and n > 0 else 1
