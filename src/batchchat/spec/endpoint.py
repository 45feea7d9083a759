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

    #: the wait before an answer, or before the first token of a stream, in milliseconds
    mean_ms: float = Field(default=0.0, ge=0)
    #: how the latency varies around its mean (lognormal keeps the mean)
    distribution: Literal["fixed", "uniform", "exponential", "lognormal"] = "fixed"
    #: spread of ``uniform`` (± jitter_ms) and ``lognormal`` (sigma = jitter_ms / mean_ms)
    jitter_ms: float = Field(default=0.0, ge=0)


class FaultSpec(Strict):
    """Probabilities (0–1) of each injected fault, per request."""

    #: probability of a 500 with an OpenAI-style error body
    http_500: float = Field(default=0.0, ge=0, le=1)
    #: probability of a 502, worded as a gateway words it (``"code": 502``)
    http_502: float = Field(default=0.0, ge=0, le=1)
    #: probability of a 503
    http_503: float = Field(default=0.0, ge=0, le=1)
    #: probability of a 429 without any ``retry-after`` or rate-limit headers
    http_429: float = Field(default=0.0, ge=0, le=1)
    #: probability of closing the connection without a response
    drop: float = Field(default=0.0, ge=0, le=1)
    #: probability of a body cut off halfway (a stream stops before ``[DONE]``)
    truncate: float = Field(default=0.0, ge=0, le=1)
    #: probability of sending nothing for ``stall_s`` seconds, then closing
    stall: float = Field(default=0.0, ge=0, le=1)
    #: probability of an error event inside a 200 stream (streams only)
    stream_error: float = Field(default=0.0, ge=0, le=1)
    #: with logprobs: the first content token was forced after its top_logprobs were taken
    forced_token: float = Field(default=0.0, ge=0, le=1)
    #: probability of a 200 whose ``usage`` numbers are strings, ``"prompt_tokens": "12"``
    usage_as_strings: float = Field(default=0.0, ge=0, le=1)
    #: probability of a 200 whose ``usage`` numbers are floats, ``"prompt_tokens": 12.0``
    usage_as_floats: float = Field(default=0.0, ge=0, le=1)
    #: probability of a 200 with ``"choices": []``
    empty_choices: float = Field(default=0.0, ge=0, le=1)
    #: probability of a 200 whose choices have no ``message`` (streams: no ``delta``)
    no_message: float = Field(default=0.0, ge=0, le=1)
    #: probability of a body sent one byte every ``trickle_interval_s`` seconds
    trickle: float = Field(default=0.0, ge=0, le=1)
    #: probability of an answer to a JSON response format that is not valid JSON (wrapped in
    #: prose, cut short, single quotes); drawn per arrival, so asking again can come back right
    invalid_json: float = Field(default=0.0, ge=0, le=1)
    #: probability of a JSON answer that the request's ``json_schema`` rejects
    schema_mismatch: float = Field(default=0.0, ge=0, le=1)
    #: probability of an answer that is none of the prompt's labels
    off_label: float = Field(default=0.0, ge=0, le=1)
    #: how long a stall lasts, seconds
    stall_s: float = Field(default=3600.0, gt=0)
    #: the pause between two bytes of a trickled body, seconds
    trickle_interval_s: float = Field(default=1.0, gt=0)
    #: ``retry-after`` seconds sent with the injected 500, 502 and 503
    #: default: none (no header)
    retry_after_s: float | None = Field(default=None, ge=0)
    #: seed of the fault draws: the same seed meets the same faults on the same rows
    seed: int = 0


class SimulatorSpec(Strict):
    """Knobs of the built-in simulator (``endpoint.simulator`` or ``batchchat simulate`` flags)."""

    #: how long the simulator takes to answer
    latency: LatencySpec = LatencySpec()
    #: streaming speed; 0 sends every chunk at once
    tokens_per_s: float = Field(default=0.0, ge=0)
    #: requests per minute: a sliding 60 s window, or calendar minutes with the gateway style
    #: default: no limit
    rpm: int | None = Field(default=None, gt=0)
    #: tokens per minute, charged as OpenAI charges: prompt + (max_tokens or 1024) × n
    #: default: no limit
    tpm: int | None = Field(default=None, gt=0)
    #: start the rate-limit window already full, as in the middle of a long job
    prefill: bool = False
    #: require ``Authorization: Bearer <this key>``, else answer 401
    #: default: none (no key needed)
    api_key: str | None = None
    #: injected faults, each a probability per request
    faults: FaultSpec = FaultSpec()
    #: seconds between ``: keep-alive`` comment lines in slow streams
    keep_alive_s: float = Field(default=5.0, gt=0)
    #: "openai": sliding 60 s windows; "gateway": LiteLLM's calendar-minute windows and headers
    rate_limit_style: Literal["openai", "gateway"] = "openai"
    #: the gateway style's window: a minute, as LiteLLM's; shorter ones rehearse in seconds
    gateway_window_s: float = Field(default=60.0, gt=0)
    #: close a kept-alive connection after a streamed response, as llama.cpp's server does
    close_after_stream: bool = False
    #: the context window in tokens; larger requests get a 400
    #: default: unlimited
    context_tokens: int | None = Field(default=None, gt=0)
    #: how the context-overflow 400 is worded: like OpenAI or like llama.cpp's server
    error_style: Literal["openai", "llamacpp"] = "openai"
    #: the Batch API (/v1/files, /v1/batches): its pace, faults, or its absence
    batch: BatchSimSpec = BatchSimSpec()
    #: how a wrong key is refused: OpenAI's 401, or a LiteLLM proxy's 400 "No connected db."
    auth_error: Literal["openai", "litellm"] = "openai"


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
    """Where requests go: an OpenAI-compatible API root, or the built-in simulator."""

    #: the API root, e.g. ``https://api.openai.com/v1`` (``/chat/completions`` is appended
    #: unless the URL already ends with it), or ``simulator`` for the built-in local server
    base_url: str = SIMULATOR
    #: the NAME of the environment variable holding the key (``OPENAI_API_KEY``), never the
    #: key itself; sent as ``Authorization: Bearer <key>``
    #: default: none (no key is sent)
    api_key_env: str | None = None
    #: extra HTTP headers; values may name environment variables as ``${VAR}``
    headers: dict[str, str] = Field(default_factory=dict)
    #: total deadline of one attempt, seconds
    timeout_s: float = Field(default=60.0, gt=0)
    #: deadline for the TCP and TLS connection, seconds
    connect_timeout_s: float = Field(default=10.0, gt=0)
    #: deadline for the response headers once the request is sent, seconds
    #: default: none (bounded by ``timeout_s``)
    first_byte_timeout_s: float | None = Field(default=None, gt=0)
    #: longest silence allowed between two bytes of a body, seconds (streams send keep-alives)
    #: default: none (bounded by ``timeout_s``)
    idle_timeout_s: float | None = Field(default=None, gt=0)
    #: knobs of the built-in simulator (latency, rate limits, faults) when ``base_url`` is
    #: ``simulator`` (see [The simulator](../simulator.md#knobs))
    #: default: an instant, faultless simulator
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
