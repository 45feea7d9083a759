"""The plain typed values that flow spec → plan → execute → sink → report.

Every stage speaks these types and nothing else: the planner makes
:class:`ChatRequest`, the parser makes :class:`ChatResponse`, the executor
wraps the outcome of each request in a :class:`ChatResult`, the sink turns
results into Parquet rows. They are slotted dataclasses because one of each
exists per request on the hot path.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Any


class StopReason(StrEnum):
    """Why a run ended (``ExecutionStats.stop_reason``, ``runs/<run_id>.json``, the report)."""

    #: every request was sent and settled
    COMPLETED = "completed"
    #: the next request could pass ``budget.max_cost_usd``
    BUDGET = "budget"
    #: SIGINT/SIGTERM, or the caller's stop event
    INTERRUPTED = "interrupted"
    #: an error every other request would repeat: a rejected key, no quota, no server
    FATAL = "fatal"
    #: the run broke: a malformed input line met mid-run, a disk that is full
    ERROR = "error"
    #: batch mode (``--no-wait``): batches are still running at the Batch API; the next run
    #: of the job collects them
    PENDING = "pending"


class ExitCode(IntEnum):
    """Every exit code of the ``batchchat`` commands, in one table (README, "Exit codes")."""

    OK = 0
    #: ``run``: some rows failed for good, or a fatal error stopped it; ``status``: failed
    FAILED = 1
    #: a spec, input or usage error; nothing was sent
    INVALID = 2
    #: ``run``: stopped by the budget
    BUDGET = 3
    #: ``status``: the last run did not finish
    PARTIAL = 4
    #: ``status``: a run is writing the directory now
    RUNNING = 5
    #: batch mode: batches were submitted and are not finished; run the job again later to
    #: collect them (``EX_TEMPFAIL`` of sysexits.h: "try again later"); ``status``: pending
    PENDING = 75
    #: SIGINT/SIGTERM (128 + SIGINT, the shell's convention)
    INTERRUPTED = 130


def run_exit_code(stop_reason: StopReason, *, rows_failed: int) -> ExitCode:
    """The exit code of ``batchchat run`` for a run that ended this way."""
    if stop_reason is StopReason.INTERRUPTED:
        return ExitCode.INTERRUPTED
    if stop_reason is StopReason.BUDGET:
        return ExitCode.BUDGET
    if stop_reason is StopReason.PENDING:
        return ExitCode.PENDING
    if stop_reason is StopReason.FATAL or rows_failed:
        return ExitCode.FAILED
    return ExitCode.OK


def new_run_id() -> str:
    """A sortable, unique id for one run: UTC start time plus a random suffix."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]


def custom_id(row_id: str, sample: int) -> str:
    """A request's id, unique in a job: ``"<row_id>#<sample>"`` (the Batch API ``custom_id``)."""
    return f"{row_id}#{sample}"


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One planned request: a row (and sample index) rendered into a Chat Completions body."""

    #: the input row's id (the id column's value, or the row position), as a string
    row_id: str
    #: which of the ``samples`` independent requests for this row (0-based)
    sample: int
    #: deterministic id for this request (:func:`custom_id`); the Batch API ``custom_id``
    custom_id: str
    #: the JSON body exactly as it will be sent
    body: dict[str, Any]
    #: sha256 (hex) of the canonical body plus the endpoint identity, never the key
    request_hash: str
    #: offline estimate of the prompt's tokens
    est_prompt_tokens: int
    #: upper bound of the completion tokens: max_tokens (or max_completion_tokens) × n
    max_output_tokens: int
    #: the seed actually sent, if any
    seed: int | None = None
    #: the input columns the spec keeps in the output (``output.keep_columns``)
    keep: dict[str, Any] = field(default_factory=dict)
    #: the row's 0-based position in the input (results arrive in completion order; this
    #: puts them back in input order with one numeric sort)
    row_index: int | None = None

    @property
    def est_tokens(self) -> int:
        """What a server charges against TPM at admission: prompt + max output."""
        return self.est_prompt_tokens + self.max_output_tokens

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream", False))


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str | None
    type: str
    name: str | None
    arguments: str | None


@dataclass(frozen=True, slots=True)
class TopLogprob:
    token: str
    logprob: float
    bytes: list[int] | None


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprob]

    def as_json(self) -> dict[str, Any]:
        """The token as the API spells it (what the logprobs column and the cache keep)."""
        return {
            "token": self.token,
            "logprob": self.logprob,
            "bytes": self.bytes,
            "top_logprobs": [
                {"token": top.token, "logprob": top.logprob, "bytes": top.bytes}
                for top in self.top_logprobs
            ],
        }


@dataclass(frozen=True, slots=True)
class Choice:
    """One choice of a completion, flattened to what the output columns hold."""

    index: int
    content: str | None
    reasoning_content: str | None
    refusal: str | None
    finish_reason: str | None
    tool_calls: list[ToolCall]
    #: per-token logprobs of the content, or None when not requested
    logprobs: list[TokenLogprob] | None


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts as the server reported them; None where it did not say."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class ChatResponse:
    """A successful completion (from a JSON body or an assembled stream)."""

    id: str | None
    model: str | None
    system_fingerprint: str | None
    choices: list[Choice]
    usage: Usage
    #: the whole response as JSON text, kept only when ``output.keep_raw`` asks for it
    raw: str | None = None


@dataclass(slots=True)
class ChatResult:
    """The final outcome of one request, success or failure, as the sink receives it."""

    request: ChatRequest
    response: ChatResponse | None
    #: the error that ended the request for good (None when ok)
    error: BaseException | None
    http_status: int | None
    attempts: int
    latency_ms: float
    started_at: datetime
    finished_at: datetime
    #: cost in USD of this result's usage (set by the pricing step; None = unpriced); with
    #: re-asks, of every answer the row was given (``ask_costs_usd`` has each)
    cost_usd: float | None = None
    #: the Batch API batch that answered it (batch mode); None for online requests
    batch_id: str | None = None
    #: the pool member that answered (or last failed) it; None with a single endpoint
    endpoint: str | None = None
    #: times the row was asked again because its answer failed the job's check
    reasks: int = 0
    #: the cost of each answer, first ask first (None: the job does not re-ask)
    ask_costs_usd: list[float | None] | None = None
    #: the answer came from the response cache: nothing was sent, nothing paid
    cached: bool = False
    #: what the cached answer would have cost at this job's prices
    cost_saved_usd: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.response is not None


@dataclass(slots=True)
class TimelineBucket:
    """What happened during one second of a run (for throughput and 429 charts)."""

    second: int
    requests: int = 0
    rate_limited: int = 0
    ok: int = 0
    errors: int = 0
    tokens: int = 0


@dataclass(slots=True)
class EndpointStats:
    """Counters of one endpoint of a pool (``ExecutionStats.endpoints``)."""

    #: attempts sent to it, and answered 429
    requests_sent: int = 0
    rate_limited: int = 0
    #: its attempts by HTTP status (0 = no response)
    status_counts: dict[int, int] = field(default_factory=dict)
    #: final results it gave (ok, or the error of the row's last attempt)
    results_ok: int = 0
    results_error: int = 0
    #: times it was put out of the pool for a while (repeated 5xx, timeouts, connections)
    cooldowns: int = 0
    #: why it was taken out for the rest of the run (a rejected key, no quota…), if it was
    removed: str | None = None


@dataclass(slots=True)
class ExecutionStats:
    """Counters of one execution, kept by the executor and read by the report."""

    run_id: str
    started_at: datetime
    finished_at: datetime | None = None
    #: HTTP attempts made (first tries + retries)
    requests_sent: int = 0
    retries: int = 0
    #: requests sent again at once, on a fresh connection, because the server had closed
    #: the pooled one before answering (not attempts: nothing reached the server)
    resent: int = 0
    #: attempts answered 429
    rate_limited: int = 0
    #: attempts by HTTP status (0 = no response: timeout or network error)
    status_counts: dict[int, int] = field(default_factory=dict)
    #: final results handed to the sink
    results_ok: int = 0
    results_error: int = 0
    #: rows skipped because an earlier run finished them
    skipped: int = 0
    #: the requests the job has in all (input rows × samples), done or not
    planned: int | None = None
    #: why the run ended
    stop_reason: StopReason = StopReason.COMPLETED
    #: what stopped the run early when every other request would fail the same way
    fatal_error: str | None = None
    timeline: list[TimelineBucket] = field(default_factory=list)
    #: attempts sent and not answered yet (live)
    in_flight: int = 0
    #: attempts allowed in flight now: the adaptive limit, or max_concurrency (live)
    concurrency: int = 0
    #: token usage of the finished results, as the server reported it
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: cost of the finished results that have a price (USD)
    cost_usd: float = 0.0
    #: per endpoint of a pool, by name (empty with a single endpoint)
    endpoints: dict[str, EndpointStats] = field(default_factory=dict)
    #: re-asks sent (a row asked again because its answer failed the check), apart from
    #: ``retries`` (attempts sent again after a transport or server failure)
    reasks: int = 0
    #: what the answers to re-asks cost (USD), included in ``cost_usd``
    reask_cost_usd: float = 0.0
    #: rows answered from the response cache, and what those answers would have cost
    cache_hits: int = 0
    cache_saved_usd: float = 0.0
    #: answers added to the response cache
    cache_stored: int = 0
