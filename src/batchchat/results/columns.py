"""The result columns, group by group: their Arrow fields and how one result fills them.

Columns come in groups that travel together — identity, outcome, endpoint (a pool's), batch,
response, choices (``n > 1``), usage, asks (re-asks and the response cache), structured
output (``output.parse``), raw (``output.keep_raw``) —
each a :class:`ColumnGroup`. :mod:`batchchat.results.schema` picks a job's groups.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from batchchat.errors import error_type_name
from batchchat.models import ChatResult, Choice, TokenLogprob, ToolCall
from batchchat.results.structured import StructuredOutput, list_of
from batchchat.secrets import Redactor, redact_shapes

STATUS_OK = "ok"
STATUS_ERROR = "error"
TIMESTAMP = pa.timestamp("us", tz="UTC")
#: the columns that identify a result; (row_id, sample) is the resume key
KEY = ("row_id", "sample")

_STR, _I64, _F64 = pa.string(), pa.int64(), pa.float64()
_TOOL_CALL = pa.struct(
    [
        ("id", _STR),
        ("type", _STR),
        ("function", pa.struct([("name", _STR), ("arguments", _STR)])),
    ]
)
_TOP_LOGPROB = pa.struct([("token", _STR), ("logprob", _F64), ("bytes", list_of(_I64))])
_TOKEN_LOGPROB = pa.struct(
    [
        ("token", _STR),
        ("logprob", _F64),
        ("bytes", list_of(_I64)),
        ("top_logprobs", list_of(_TOP_LOGPROB)),
    ]
)
TOOL_CALLS = list_of(_TOOL_CALL)
LOGPROBS = list_of(_TOKEN_LOGPROB)
CHOICES = list_of(
    pa.struct(
        [
            ("index", _I64),
            ("content", _STR),
            ("reasoning_content", _STR),
            ("refusal", _STR),
            ("finish_reason", _STR),
            ("tool_calls", TOOL_CALLS),
            ("logprobs", LOGPROBS),
        ]
    )
)

_MAX_MESSAGE_CHARS = 2000


@dataclass(frozen=True, slots=True)
class ColumnGroup:
    """Columns that travel together: their Arrow fields and how one result fills them."""

    name: str
    fields: tuple[pa.Field, ...]
    #: one result → one value per field, in the order of ``fields``
    extract: Callable[[ChatResult], tuple[Any, ...]]


def identity(keep: Mapping[str, pa.DataType]) -> ColumnGroup:
    names = tuple(keep)
    fields = (
        pa.field("row_id", _STR),
        pa.field("sample", _I64),
        *(pa.field(name, arrow) for name, arrow in keep.items()),
        pa.field("request_hash", _STR),
        pa.field("row_index", _I64),
    )

    def extract(result: ChatResult) -> tuple[Any, ...]:
        request = result.request
        kept = [request.keep.get(n) for n in names]
        return (request.row_id, request.sample, *kept, request.request_hash, request.row_index)

    return ColumnGroup("identity", fields, extract)


def outcome(run_id: str | None, redact: Redactor = redact_shapes) -> ColumnGroup:
    fields = (
        pa.field("status", _STR),
        pa.field("error_type", _STR),
        pa.field("error_message", _STR),
        pa.field("http_status", _I64),
        pa.field("attempts", _I64),
        pa.field("latency_ms", _F64),
        pa.field("started_at", TIMESTAMP),
        pa.field("finished_at", TIMESTAMP),
        pa.field("run_id", _STR),
    )

    def extract(result: ChatResult) -> tuple[Any, ...]:
        error = result.error
        if error is None and result.response is not None:
            status, kind, message = STATUS_OK, None, None
        else:
            status, kind, message = STATUS_ERROR, *_describe_error(error, redact)
        return (
            status,
            kind,
            message,
            result.http_status,
            result.attempts,
            result.latency_ms,
            result.started_at,
            result.finished_at,
            run_id,
        )

    return ColumnGroup("outcome", fields, extract)


def batch() -> ColumnGroup:
    """The Batch API batch that answered a row (null for rows answered online): in every
    job, so that a job may switch between online and batch mode and keep its results."""

    def extract(result: ChatResult) -> tuple[Any, ...]:
        return (result.batch_id,)

    return ColumnGroup("batch", (pa.field("batch_id", _STR),), extract)


def _describe_error(error: BaseException | None, redact: Redactor) -> tuple[str, str]:
    if error is None:
        return "NoResponse", "the request ended without an error and without a response"
    message = redact(str(error)) or type(error).__name__
    if len(message) > _MAX_MESSAGE_CHARS:
        message = message[: _MAX_MESSAGE_CHARS - 1] + "…"
    return error_type_name(error), message


def endpoint() -> ColumnGroup:
    """Which endpoint of a pool answered (or last failed) the row: its short stable name."""

    def extract(result: ChatResult) -> tuple[Any, ...]:
        return (result.endpoint,)

    return ColumnGroup("endpoint", (pa.field("endpoint", _STR),), extract)


_RESPONSE_FIELDS = (
    pa.field("response_id", _STR),
    pa.field("model", _STR),
    pa.field("system_fingerprint", _STR),
    pa.field("seed", _I64),
    pa.field("content", _STR),
    pa.field("reasoning_content", _STR),
    pa.field("refusal", _STR),
    pa.field("finish_reason", _STR),
    pa.field("tool_calls", TOOL_CALLS),
    pa.field("logprobs", LOGPROBS),
)


def response() -> ColumnGroup:
    no_choice = (None,) * 6

    def extract(result: ChatResult) -> tuple[Any, ...]:
        response = result.response
        seed = result.request.seed
        if response is None:
            return (None, None, None, seed, *no_choice)
        choice = first_choice(response.choices)
        return (
            response.id,
            response.model,
            response.system_fingerprint,
            seed,
            *(no_choice if choice is None else _choice_values(choice)),
        )

    return ColumnGroup("response", _RESPONSE_FIELDS, extract)


def first_choice(choices: Sequence[Choice]) -> Choice | None:
    """Choice 0 (the top-level response columns describe it)."""
    for choice in choices:
        if choice.index == 0:
            return choice
    return choices[0] if choices else None


def _choice_values(choice: Choice) -> tuple[Any, ...]:
    return (
        choice.content,
        choice.reasoning_content,
        choice.refusal,
        choice.finish_reason,
        _tool_calls(choice.tool_calls),
        _logprobs(choice.logprobs),
    )


def _tool_calls(calls: Sequence[ToolCall]) -> list[dict[str, Any]] | None:
    # null, not [], when the model called no tool: `tool_calls.is_not_null()` finds callers
    if not calls:
        return None
    return [
        {"id": c.id, "type": c.type, "function": {"name": c.name, "arguments": c.arguments}}
        for c in calls
    ]


def _logprobs(tokens: Sequence[TokenLogprob] | None) -> list[dict[str, Any]] | None:
    if tokens is None:
        return None
    return [t.as_json() for t in tokens]


def choices() -> ColumnGroup:
    def extract(result: ChatResult) -> tuple[Any, ...]:
        response = result.response
        if response is None:
            return (None,)
        return ([_choice_dict(choice) for choice in response.choices],)

    return ColumnGroup("choices", (pa.field("choices", CHOICES),), extract)


def _choice_dict(choice: Choice) -> dict[str, Any]:
    content, reasoning, refusal, finish, calls, logprobs = _choice_values(choice)
    return {
        "index": choice.index,
        "content": content,
        "reasoning_content": reasoning,
        "refusal": refusal,
        "finish_reason": finish,
        "tool_calls": calls,
        "logprobs": logprobs,
    }


def usage() -> ColumnGroup:
    fields = (
        pa.field("prompt_tokens", _I64),
        pa.field("completion_tokens", _I64),
        pa.field("total_tokens", _I64),
        pa.field("cached_tokens", _I64),
        pa.field("reasoning_tokens", _I64),
        pa.field("cost_usd", _F64),
    )
    unknown = (None,) * 5

    def extract(result: ChatResult) -> tuple[Any, ...]:
        if result.response is None:
            return (*unknown, result.cost_usd)
        u = result.response.usage
        return (
            u.prompt_tokens,
            u.completion_tokens,
            u.total_tokens,
            u.cached_tokens,
            u.reasoning_tokens,
            result.cost_usd,
        )

    return ColumnGroup("usage", fields, extract)


def asks() -> ColumnGroup:
    """How the answer was come by: re-asks and what each ask cost, or the response cache.

    Every job has these columns, whether it re-asks or caches or not, so the parts of one
    output directory keep one schema when a later run turns either on.
    """
    fields = (
        pa.field("reasks", _I64),
        pa.field("ask_costs_usd", list_of(_F64)),
        pa.field("cached", pa.bool_()),
        pa.field("cost_saved_usd", _F64),
    )

    def extract(result: ChatResult) -> tuple[Any, ...]:
        return (result.reasks, result.ask_costs_usd, result.cached, result.cost_saved_usd)

    return ColumnGroup("asks", fields, extract)


def structured(parser: StructuredOutput) -> ColumnGroup:
    fields = (pa.field("parsed", parser.arrow_type), pa.field("parse_error", _STR))

    def extract(result: ChatResult) -> tuple[Any, ...]:
        response = result.response
        if result.error is not None or response is None:
            return (None, None)  # a failed request has nothing to parse; error_type says why
        choice = first_choice(response.choices)
        value, error = parser.parse(None if choice is None else choice.content)
        if error is not None and choice is not None and choice.finish_reason == "length":
            error = f"the answer was cut off at max_tokens (finish_reason length): {error}"
        return value, error

    return ColumnGroup("structured", fields, extract)


def raw(redact: Redactor = redact_shapes) -> ColumnGroup:
    def extract(result: ChatResult) -> tuple[Any, ...]:
        raw = None if result.response is None else result.response.raw
        return (None if raw is None else redact(raw),)

    return ColumnGroup("raw", (pa.field("raw_response", _STR),), extract)
