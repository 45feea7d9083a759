"""The job spec as pydantic models: every key, its type, its default and what it means.

A :class:`JobSpec` is the single source of truth of a job; :mod:`batchchat.spec.load`
builds one from YAML, with file, line and field in every error.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import orjson
from jinja2 import StrictUndefined, TemplateError, UndefinedError, nodes
from jinja2.sandbox import SandboxedEnvironment
from pydantic import Field, ValidationInfo, field_validator, model_validator

from batchchat.errors import SpecError
from batchchat.spec.base import Strict
from batchchat.spec.batch import BatchSpec, refuse_online_only, with_flex_patience
from batchchat.spec.cache import CacheSpec, default_cache_dir
from batchchat.spec.endpoint import (
    EndpointSpec,
    without_password,
)
from batchchat.spec.pool import (
    PoolEndpointSpec,
    RoutingSpec,
    check_currencies,
    check_members,
    endpoint_identity,
    redact_members,
)
from batchchat.spec.sections import (
    BudgetSpec,
    InputSpec,
    LimitsSpec,
    OutputSpec,
    PriceSpec,
    RetrySpec,
    SeedSpec,
)


def _as_text(value: Any) -> Any:
    """A YAML scalar as the text it was written as (true → "true"); anything else as is."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


class JobSpec(Strict):
    """A job: which rows, sent where, asking what, written how. Relative paths in it are
    relative to the job file's own directory, so a job runs the same from anywhere."""

    #: the job's name; the default output directory is ``out/<name>``
    #: default: the job file's name without ``.yaml``
    name: str
    #: the dataset
    input: InputSpec
    #: where requests go
    #: default: the built-in simulator
    endpoint: EndpointSpec = EndpointSpec()
    #: a pool of endpoints instead of ``endpoint``: several endpoints for one job, each with
    #: its own name, key, limits, prices and model mapping (see [Endpoint pools](../pools.md))
    #: default: none (one ``endpoint``)
    endpoints: list[PoolEndpointSpec] | None = None
    #: how a pool spreads rows over its endpoints and treats a failing one (only with
    #: ``endpoints``)
    routing: RoutingSpec = RoutingSpec()
    #: the Chat Completions body, templated per row: ``model`` and ``messages`` are required,
    #: every other field is passed through (see [The job file](../job.md#the-request))
    request: dict[str, Any]
    #: ``1234``: that seed on every request. ``{base: 1234, per_row: true}``: a stable seed
    #: per row and sample, the same on every re-run. Set it here or as ``request.seed``
    #: default: none
    seed: int | SeedSpec | None = None
    #: independent requests per row (custom ids ``<row id>#0``, ``#1``, …)
    samples: int = Field(default=1, gt=0)
    #: client-side rate limits
    limits: LimitsSpec = LimitsSpec()
    #: the retry policy
    retry: RetrySpec = RetrySpec()
    #: where and what to write
    output: OutputSpec = OutputSpec()
    #: prices per model, extending and overriding the built-in table
    #: default: the built-in table
    pricing: dict[str, PriceSpec] = Field(default_factory=dict)
    #: USD per unit of each other currency used by a price (e.g. ``{CNY: 0.14}``)
    currency_rates: dict[str, float] = Field(default_factory=dict)
    #: a spending cap per run
    #: default: no budget
    budget: BudgetSpec | None = None
    #: the response cache shared by jobs: answers already paid for are taken from it
    #: (``cache: true`` takes every default; see [The response cache](../cache.md))
    #: default: no cache
    cache: CacheSpec | None = None
    #: text values for ``{{ vars.x }}`` in templates and paths (quote numbers: ``t: "0.7"``);
    #: ``--var x=value`` overrides them
    vars: dict[str, str] = Field(default_factory=dict)
    #: the directory relative paths in the spec are resolved against; set it only in a spec
    #: given to the Python API as a mapping
    #: default: the job file's directory (for a mapping: the working directory)
    base_dir: str = "."
    #: online: requests sent one by one; batch: through the provider's Batch API
    mode: Literal["online", "batch"] = "online"
    #: batch mode's settings: lines and bytes per batch, waves, window, polling, resubmission
    batch: BatchSpec = BatchSpec()

    @model_validator(mode="before")
    @classmethod
    def _flex_is_patient(cls, data: Any) -> Any:
        return with_flex_patience(data)

    @field_validator("mode")
    @classmethod
    def _batch_requests_do_not_stream(cls, mode: str, info: ValidationInfo) -> str:
        request = info.data.get("request") or {}
        if mode == "batch" and request.get("stream") is True:
            raise ValueError(
                "request.stream is true, but the Batch API does not stream answers: remove "
                "stream (or run the job with mode: online)"
            )
        if mode == "batch":
            refuse_online_only(info.data.get("output"), info.data.get("endpoints"))
        return mode

    @field_validator("vars", mode="before")
    @classmethod
    def _scalars_as_text(cls, value: Any) -> Any:
        # `vars: {year: 2024, full: true}` is what people write; they mean the text
        if not isinstance(value, dict):
            return value
        return {key: _as_text(item) for key, item in value.items()}

    @field_validator("cache", mode="before")
    @classmethod
    def _cache_switch(cls, value: Any) -> Any:
        if value is True:
            return {}
        return None if value is False else value

    @field_validator("request")
    @classmethod
    def _has_model_and_messages(cls, request: dict[str, Any]) -> dict[str, Any]:
        missing = [key for key in ("model", "messages") if key not in request]
        if missing:
            raise ValueError(f"request needs {' and '.join(missing)}")
        if not isinstance(request["messages"], list | str):
            raise ValueError("request.messages must be a list of messages (or a template)")
        return request

    @field_validator("endpoints")
    @classmethod
    def _names_are_unique(
        cls, endpoints: list[PoolEndpointSpec] | None
    ) -> list[PoolEndpointSpec] | None:
        if endpoints is not None:
            check_members(endpoints)
        return endpoints

    @model_validator(mode="after")
    def _one_kind_of_endpoint(self) -> JobSpec:
        # a dumped and reloaded pool spec carries the default endpoint: only a real one clashes
        if self.endpoints is not None and self.endpoint != EndpointSpec():
            raise ValueError(
                "endpoint and endpoints: give one endpoint (endpoint:) or a pool (endpoints:), "
                "not both"
            )
        if self.endpoints is None and self.routing != RoutingSpec():
            raise ValueError("routing: applies to a pool of endpoints (endpoints:)")
        if self.endpoints is not None:
            check_currencies(self.endpoints, self.currency_rates)
        return self

    @model_validator(mode="after")
    def _currencies_are_convertible(self) -> JobSpec:
        for model, price in self.pricing.items():
            if price.currency != "USD" and price.currency not in self.currency_rates:
                raise ValueError(
                    f"pricing.{model} is in {price.currency}: add currency_rates: "
                    f"{{{price.currency}: <USD per {price.currency}>}}"
                )
        return self

    # -- derived values ---------------------------------------------------------------------

    @property
    def output_dir(self) -> Path:
        """The output directory, resolved against the spec's directory."""
        raw = self.output.path or f"out/{self.name}"
        return self.resolve_path(raw)

    def resolve_path(self, raw: str) -> Path:
        """A path of the spec (input or output), with ``{{ vars.x }}`` filled in, made absolute
        against the spec's directory, so a cron job may run from any working directory."""
        path = Path(os.path.expanduser(_render_path(raw, self.vars, self.name)))
        return path if path.is_absolute() else Path(os.path.normpath(Path(self.base_dir) / path))

    @property
    def cache_dir(self) -> Path | None:
        """The response cache's directory; None when the job uses no cache."""
        if self.cache is None or not self.cache.is_on:
            return None
        if self.cache.path is None:
            return default_cache_dir()
        return self.resolve_path(self.cache.path)

    def request_identity(self) -> dict[str, Any]:
        """Everything that changes what is sent, and which rows results belong to, as plain
        data: shown when a resume is refused, hashed (templates canonical) for it."""
        return {
            "request": self.request,
            "seed": self.seed if not isinstance(self.seed, SeedSpec) else self.seed.model_dump(),
            "samples": self.samples,
            # a pool's members may change between runs: what each row asks does not
            **_endpoint_key(self.endpoint, self.endpoints),
            "vars": self.vars,
            # results are filed under row ids: other ids would be other rows, paid again
            "id_column": self.input.id_column,
        }

    def request_fingerprint(self) -> str:
        """Hash of everything that changes what is sent; resume refuses when it differs.

        A template counts by its tokens, so spaces inside ``{{ }}`` or ``{% %}`` change
        nothing, while any change to the text around them does.
        """
        identity = self.request_identity()
        identity["request"] = _canonical(identity["request"])
        return _digest(identity)

    def legacy_fingerprint(self) -> str:
        """The fingerprint of output directories written before ``id_column`` counted."""
        identity = self.request_identity()
        del identity["id_column"]
        return _digest(identity)

    def redacted(self) -> dict[str, Any]:
        """The resolved spec as plain data, safe to write next to results (no secrets): a
        simulator key, secret-looking header values written literally, a URL's password."""
        data = self.model_dump(mode="json", exclude_none=True)
        endpoint = data.get("endpoint", {})
        sim = endpoint.get("simulator")
        if sim and sim.get("api_key"):
            sim["api_key"] = "***"
        for name in self.endpoint.literal_secret_headers():
            endpoint["headers"][name] = "***"
        endpoint["base_url"] = without_password(self.endpoint.base_url)
        if self.endpoints is None:
            data.pop("routing", None)
        else:
            del data["endpoint"]  # the default one, unused: a pool's job.yaml shows its members
            redact_members(data["endpoints"], self.endpoints)
        return data

    @property
    def endpoint_identity(self) -> str:
        """The endpoint's part of each request hash: its base_url, or ``pool``."""
        return endpoint_identity(self.endpoint, self.endpoints)


def _endpoint_key(
    endpoint: EndpointSpec, endpoints: list[PoolEndpointSpec] | None
) -> dict[str, str]:
    if endpoints is None:
        return {"base_url": endpoint.base_url}
    return {"endpoints": endpoint_identity(endpoint, endpoints)}


def _digest(data: Any) -> str:
    # YAML maps like logit_bias {50256: -100} have integer keys; JSON makes them strings
    options = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
    return hashlib.sha256(orjson.dumps(data, option=options)).hexdigest()


def _canonical(value: Any) -> Any:
    """``value`` with each template string replaced by its tokens (whitespace in tags gone)."""
    if isinstance(value, dict):
        return {key: _canonical(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    if not isinstance(value, str) or not any(mark in value for mark in ("{{", "{%", "{#")):
        return value
    try:
        tokens = [(kind, text) for _, kind, text in _PATH_TEMPLATES.lex(value)]
    except TemplateError:
        return value  # not a template after all: its text is what counts
    return {"template": [token for token in tokens if token[0] != "whitespace"]}


_PATH_TEMPLATES = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


def _render_path(raw: str, variables: Mapping[str, str], name: str) -> str:
    if "{" not in raw:
        return raw
    try:
        template = _PATH_TEMPLATES.from_string(raw)
        missing = sorted(_vars_used(raw) - set(variables))
        if missing:
            raise SpecError(
                f"path {raw!r} uses {', '.join(f'vars.{v}' for v in missing)}, which "
                f"{'is' if len(missing) == 1 else 'are'} not set: add "
                f"{'it' if len(missing) == 1 else 'them'} under vars: or pass "
                + " ".join(f"--var {v}=..." for v in missing)
            )
        return template.render(vars=variables, name=name)
    except UndefinedError as exc:
        raise SpecError(f"path {raw!r}: {exc.message}") from None
    except TemplateError as exc:
        raise SpecError(f"path {raw!r} is not a valid template: {exc}") from None


def _vars_used(raw: str) -> set[str]:
    """The names a path template reads as ``vars.x`` or ``vars['x']``."""
    used = set()
    tree = _PATH_TEMPLATES.parse(raw)
    for attr in tree.find_all(nodes.Getattr):
        if isinstance(attr.node, nodes.Name) and attr.node.name == "vars":
            used.add(attr.attr)
    for item in tree.find_all(nodes.Getitem):
        reads_vars = isinstance(item.node, nodes.Name) and item.node.name == "vars"
        if reads_vars and isinstance(item.arg, nodes.Const) and isinstance(item.arg.value, str):
            used.add(item.arg.value)
    return used
