"""The job spec as pydantic models: every key, its type, its default and what it means.

A :class:`JobSpec` is the single source of truth of a job; :mod:`batchchat.spec.load`
builds one from YAML, with file, line and field in every error.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import orjson
from jinja2 import StrictUndefined, TemplateError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from batchchat.errors import SpecError

SIMULATOR = "simulator"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(Strict):
    path: str
    format: Literal["parquet", "jsonl", "csv"] | None = None
    id_column: str | None = None
    limit: int | None = Field(default=None, gt=0)
    #: what a malformed JSONL line does: stop the run (error) or get recorded and skipped
    on_bad_line: Literal["error", "skip"] = "error"
    #: rows per batch read from the input; bounds memory
    batch_size: int = Field(default=10_000, gt=0)
    #: the text encoding of CSV and JSONL files (Python's codec names: latin-1, cp1252, ...);
    #: a byte that does not decode is an input error naming its file, line and column
    encoding: str = "utf-8"

    @field_validator("encoding")
    @classmethod
    def _is_a_codec(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(
                f"unknown encoding {value!r} (for example utf-8, latin-1, cp1252)"
            ) from None
        return value


class LatencySpec(Strict):
    """Simulated latency: fixed ``mean_ms``, or a distribution around it."""

    mean_ms: float = Field(default=0.0, ge=0)
    distribution: Literal["fixed", "uniform", "exponential", "lognormal"] = "fixed"
    #: spread for uniform (± jitter_ms) and lognormal (sigma = jitter_ms / mean_ms)
    jitter_ms: float = Field(default=0.0, ge=0)


class FaultSpec(Strict):
    """Probabilities (0–1) of each injected fault, per request."""

    http_500: float = Field(default=0.0, ge=0, le=1)
    http_502: float = Field(default=0.0, ge=0, le=1)
    http_503: float = Field(default=0.0, ge=0, le=1)
    http_429: float = Field(default=0.0, ge=0, le=1)  # a 429 without rate-limit headers
    drop: float = Field(default=0.0, ge=0, le=1)  # connection closed without a response
    truncate: float = Field(default=0.0, ge=0, le=1)  # body cut short
    stall: float = Field(default=0.0, ge=0, le=1)  # no bytes for stall_s
    stream_error: float = Field(default=0.0, ge=0, le=1)  # error event inside a 200 stream
    #: with logprobs: the first content token was forced after its top_logprobs were taken
    forced_token: float = Field(default=0.0, ge=0, le=1)
    usage_as_strings: float = Field(default=0.0, ge=0, le=1)  # 200 with "prompt_tokens": "12"
    usage_as_floats: float = Field(default=0.0, ge=0, le=1)  # 200 with "prompt_tokens": 12.0
    empty_choices: float = Field(default=0.0, ge=0, le=1)  # 200 with "choices": []
    no_message: float = Field(default=0.0, ge=0, le=1)  # 200 whose choices lack "message"
    trickle: float = Field(default=0.0, ge=0, le=1)  # body sent a byte per trickle_interval_s
    stall_s: float = Field(default=3600.0, gt=0)
    trickle_interval_s: float = Field(default=1.0, gt=0)
    #: ``retry-after`` seconds on the injected 500/502/503 (None: no header)
    retry_after_s: float | None = Field(default=None, ge=0)
    seed: int = 0


class SimulatorSpec(Strict):
    """Knobs of the built-in simulator (``endpoint.simulator`` or ``batchchat simulate`` flags)."""

    latency: LatencySpec = LatencySpec()
    #: streaming speed; 0 sends every chunk at once
    tokens_per_s: float = Field(default=0.0, ge=0)
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    #: start the rate-limit window already full, as in the middle of a long job
    prefill: bool = False
    #: require this bearer key (None: no auth)
    api_key: str | None = None
    faults: FaultSpec = FaultSpec()
    #: seconds between ``: keep-alive`` comment lines in slow streams
    keep_alive_s: float = Field(default=5.0, gt=0)
    #: "openai": sliding 60 s windows; "gateway": LiteLLM's calendar-minute windows and headers
    rate_limit_style: Literal["openai", "gateway"] = "openai"
    #: the gateway style's window: a minute, as LiteLLM's; shorter ones rehearse in seconds
    gateway_window_s: float = Field(default=60.0, gt=0)
    #: close a kept-alive connection after a streamed response, as llama.cpp's server does
    close_after_stream: bool = False
    #: the context window in tokens (None: unlimited); larger requests get a 400
    context_tokens: int | None = Field(default=None, gt=0)
    #: how the context-overflow 400 is worded: like OpenAI or like llama.cpp's server
    error_style: Literal["openai", "llamacpp"] = "openai"


#: header names whose values are credentials
_SECRET_HEADER = re.compile(r"(?i)auth|key|token|secret|passw|cookie|credential")
#: a header value that only names environment variables: "${TOKEN}", "Bearer ${KEY}"
_ONLY_VARIABLES = re.compile(r"(?:[A-Za-z]+ )?(?:\$\{[A-Za-z_][A-Za-z0-9_]*\}\s*)+")


def without_password(url: str) -> str:
    """``url`` with any password in it shown as ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class EndpointSpec(Strict):
    base_url: str = SIMULATOR
    #: the NAME of the environment variable holding the key; never the key itself
    api_key_env: str | None = None
    #: extra headers; values may name environment variables as ${VAR}
    headers: dict[str, str] = Field(default_factory=dict)
    #: total deadline of one attempt, seconds
    timeout_s: float = Field(default=60.0, gt=0)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    #: deadline for the response headers after the request was sent
    first_byte_timeout_s: float | None = Field(default=None, gt=0)
    #: longest silence allowed between two bytes of a body (streams send keep-alives)
    idle_timeout_s: float | None = Field(default=None, gt=0)
    simulator: SimulatorSpec | None = None

    @property
    def is_simulator(self) -> bool:
        return self.base_url == SIMULATOR

    @field_validator("base_url")
    @classmethod
    def _is_an_http_url(cls, value: str) -> str:
        if value == SIMULATOR:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"must be an http:// or https:// URL such as https://api.openai.com/v1, or "
                f"'{SIMULATOR}'; got {value!r}"
            )
        return value

    def literal_secret_headers(self) -> list[str]:
        """Headers whose name says secret but whose value is written in the spec itself."""
        return [
            name
            for name, value in self.headers.items()
            if _SECRET_HEADER.search(name) and not _ONLY_VARIABLES.fullmatch(value)
        ]

    @field_validator("api_key_env")
    @classmethod
    def _names_a_variable(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError(
                "must be the NAME of an environment variable (like OPENAI_API_KEY), "
                "not the key itself"
            )
        return value


class SeedSpec(Strict):
    base: int
    #: derive a stable seed from (base, row id, sample) instead of sending ``base`` everywhere
    per_row: bool = False


class LimitsSpec(Strict):
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    max_concurrency: int = Field(default=64, gt=0, le=4096)
    #: adapt concurrency to 429/503/timeouts when the server sends no rate-limit headers
    adaptive: bool = True
    #: how prompt tokens are counted for TPM pacing and cost estimates: the offline
    #: estimate, or tiktoken's exact o200k count (installed, with its encoding cached)
    tokenizer: Literal["estimate", "tiktoken"] = "estimate"


class RetrySpec(Strict):
    #: attempts of one request before it fails for good; rate-limited ones do not count
    max_attempts: int = Field(default=6, gt=0)
    #: the longest wait between attempts; a server asking for longer (a daily quota) fails
    max_wait_s: float = Field(default=120.0, gt=0)
    #: the first backoff while the server shows load (it doubles, with jitter)
    initial_wait_s: float = Field(default=1.0, gt=0)
    #: how long a row may keep being refused by rate limits (429s) before it fails
    rate_limit_patience_s: float = Field(default=900.0, gt=0)


class OutputSpec(Strict):
    #: output directory; default ``out/<job name>``; may use ``{{ vars.x }}``
    path: str | None = None
    keep_columns: list[str] = Field(default_factory=list)
    parse: Literal["json"] | None = None
    keep_raw: bool = False
    labels: list[str] | dict[str, str] | None = None
    label_field: str | None = None
    #: a part is written every ``part_rows`` results or ``part_seconds``, whichever first
    part_rows: int = Field(default=50_000, gt=0)
    part_seconds: float = Field(default=10.0, gt=0)


class PriceSpec(Strict):
    """Prices per 1M tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)
    reasoning: float | None = Field(default=None, ge=0)
    currency: Literal["USD", "CNY"] = "USD"


class BudgetSpec(Strict):
    max_cost_usd: float = Field(gt=0)


def _as_text(value: Any) -> Any:
    """A YAML scalar as the text it was written as (true → "true"); anything else as is."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


#: the top-level keys of a job spec
class JobSpec(Strict):
    name: str
    input: InputSpec
    endpoint: EndpointSpec = EndpointSpec()
    request: dict[str, Any]
    seed: int | SeedSpec | None = None
    samples: int = Field(default=1, gt=0)
    limits: LimitsSpec = LimitsSpec()
    retry: RetrySpec = RetrySpec()
    output: OutputSpec = OutputSpec()
    pricing: dict[str, PriceSpec] = Field(default_factory=dict)
    #: USD per unit of each other currency used by a price (e.g. {CNY: 0.14})
    currency_rates: dict[str, float] = Field(default_factory=dict)
    budget: BudgetSpec | None = None
    #: values for ``{{ vars.x }}`` in templates and output.path; ``--var k=v`` overrides
    vars: dict[str, str] = Field(default_factory=dict)
    #: the directory relative paths in the spec are resolved against
    base_dir: str = "."

    @field_validator("vars", mode="before")
    @classmethod
    def _scalars_as_text(cls, value: Any) -> Any:
        # `vars: {year: 2024, full: true}` is what people write; they mean the text
        if not isinstance(value, dict):
            return value
        return {key: _as_text(item) for key, item in value.items()}

    @field_validator("request")
    @classmethod
    def _has_model_and_messages(cls, request: dict[str, Any]) -> dict[str, Any]:
        missing = [key for key in ("model", "messages") if key not in request]
        if missing:
            raise ValueError(f"request needs {' and '.join(missing)}")
        if not isinstance(request["messages"], list | str):
            raise ValueError("request.messages must be a list of messages (or a template)")
        return request

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

    def request_identity(self) -> dict[str, Any]:
        """Everything that changes what is sent, and which rows results belong to, as plain
        data: shown when a resume is refused, hashed (templates canonical) for it."""
        return {
            "request": self.request,
            "seed": self.seed if not isinstance(self.seed, SeedSpec) else self.seed.model_dump(),
            "samples": self.samples,
            "base_url": self.endpoint.base_url,
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
        return data


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
        return _PATH_TEMPLATES.from_string(raw).render(vars=variables, name=name)
    except UndefinedError as exc:
        known = ", ".join(sorted(variables)) or "none"
        raise SpecError(
            f"path {raw!r} uses a variable that is not set ({exc.message}); pass it with "
            f"--var KEY=VALUE (variables set: {known})"
        ) from None
    except TemplateError as exc:
        raise SpecError(f"path {raw!r} is not a valid template: {exc}") from None
