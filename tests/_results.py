"""Plain ChatResult values and job specs for the results/sink/outdir/export tests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from batchchat.errors import APIStatusError, RetriesExhausted, ServerError
from batchchat.models import (
    ChatRequest,
    ChatResponse,
    ChatResult,
    Choice,
    TokenLogprob,
    ToolCall,
    TopLogprob,
    Usage,
)
from batchchat.results.encoder import ResultEncoder
from batchchat.results.schema import result_columns
from batchchat.results.sink import ParquetSink
from batchchat.spec import JobSpec, load_spec

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
T1 = datetime(2025, 3, 1, 12, 0, 1, 500000, tzinfo=UTC)


def make_spec(
    *, request: Mapping[str, Any] | None = None, output: Mapping[str, Any] | None = None, **top: Any
) -> JobSpec:
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": "{{ text }}"}]}
    data = {
        "name": "job",
        "input": {"path": "rows.jsonl"},
        "request": {**body, **(request or {})},
        "output": dict(output or {}),
        **top,
    }
    return load_spec(data)


def make_choice(
    content: str | None = "hello",
    *,
    index: int = 0,
    tool_calls: list[ToolCall] | None = None,
    logprobs: list[TokenLogprob] | None = None,
    refusal: str | None = None,
    reasoning: str | None = None,
    finish_reason: str = "stop",
) -> Choice:
    return Choice(index, content, reasoning, refusal, finish_reason, tool_calls or [], logprobs)


def make_result(
    row_id: str,
    sample: int = 0,
    *,
    content: str | None = "hello",
    choices: list[Choice] | None = None,
    error: BaseException | None = None,
    keep: Mapping[str, Any] | None = None,
    attempts: int = 1,
    usage: Usage | None = None,
    raw: str | None = None,
    cost_usd: float | None = None,
    seed: int | None = None,
) -> ChatResult:
    request = ChatRequest(
        row_id=row_id,
        sample=sample,
        custom_id=f"{row_id}#{sample}",
        body={"model": "gpt-test"},
        request_hash=f"hash-{row_id}-{sample}",
        est_prompt_tokens=3,
        max_output_tokens=16,
        seed=seed,
        keep=dict(keep or {}),
    )
    if error is not None:
        status = getattr(error, "http_status", None)
        if isinstance(error, RetriesExhausted):
            status = error.last_error.http_status
        return ChatResult(request, None, error, status, attempts, 12.5, T0, T1, cost_usd)
    response = ChatResponse(
        id=f"chatcmpl-{row_id}",
        model="gpt-test-2025",
        system_fingerprint="fp_1",
        choices=choices if choices is not None else [make_choice(content)],
        usage=usage or Usage(10, 5, 15, 2, 1),
        raw=raw,
    )
    return ChatResult(request, response, None, 200, attempts, 12.5, T0, T1, cost_usd)


def server_error(message: str = "upstream overloaded") -> RetriesExhausted:
    return RetriesExhausted(ServerError(message, status=503), attempts=3)


def client_error(message: str = "bad request") -> APIStatusError:
    return APIStatusError(message, status=400)


def write_parts(
    results_dir: Path,
    spec: JobSpec,
    results: Iterable[ChatResult],
    *,
    input_schema: Mapping[str, pl.DataType] | None = None,
    part_rows: int = 1000,
) -> None:
    """Write results through the real sink (one part per ``part_rows`` results)."""
    columns = result_columns(spec, input_schema or {})
    sink = ParquetSink(results_dir, ResultEncoder(columns), part_rows=part_rows, part_seconds=1e9)
    for result in results:
        sink.write(result)
    sink.close()


def logprobs_of(*tokens: str) -> list[TokenLogprob]:
    return [
        TokenLogprob(
            token,
            -0.25 * (i + 1),
            list(token.encode()),
            [TopLogprob(token, -0.25 * (i + 1), list(token.encode())), TopLogprob("x", -3.0, None)],
        )
        for i, token in enumerate(tokens)
    ]
