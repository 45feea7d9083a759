"""Where requests go: the endpoint, its key and headers, and the simulator standing in for it."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, field_validator

from batchchat.spec.base import SIMULATOR, Strict
from batchchat.spec.batch import BatchSimSpec


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
    #: the Batch API (/v1/files, /v1/batches): its pace, faults, or its absence
    batch: BatchSimSpec = BatchSimSpec()


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
