"""Results in other formats: JSON Lines, OpenAI Batch API output lines, CSV.

Every format exports the deduplicated result (one row per (row_id, sample), see
:func:`batchchat.results.ledger.read_results`), read one part at a time and converted in
slices, so memory is bounded by a part, not by the job.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import orjson
import polars as pl

from batchchat.models import custom_id
from batchchat.results.columns import STATUS_OK
from batchchat.results.layout import write_atomically
from batchchat.results.ledger import iter_results

FORMATS = ("jsonl", "openai-batch", "csv")
_SLICE_ROWS = 10_000
_JSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC


def _default(value: Any) -> Any:
    """JSON for the values orjson does not know (kept input columns may hold them)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"cannot export a {type(value).__name__} as JSON")


def to_json(value: Any) -> bytes:
    return orjson.dumps(value, default=_default, option=_JSON_OPTIONS)


def export_results(out_dir: Path | str, fmt: str, dest: IO[bytes]) -> int:
    """Write the results of ``out_dir`` to ``dest`` in format ``fmt``; returns rows written."""
    writer = _WRITERS.get(fmt)
    if writer is None:
        raise ValueError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    counted = _Counted(iter_results(out_dir))
    writer(counted.slices(), dest)
    return counted.rows


def export_to_file(out_dir: Path | str, fmt: str, path: Path) -> int:
    """Like :func:`export_results`, into a file that appears only once complete."""
    rows = 0

    def write(handle: IO[bytes]) -> None:
        nonlocal rows
        rows = export_results(out_dir, fmt, handle)

    write_atomically(path, write)
    return rows


class _Counted:
    """Slices of the results, counting the rows handed out."""

    def __init__(self, parts: Iterator[pl.DataFrame]) -> None:
        self._parts = parts
        self.rows = 0

    def slices(self) -> Iterator[pl.DataFrame]:
        for part in self._parts:
            for chunk in part.iter_slices(_SLICE_ROWS):
                self.rows += chunk.height
                yield chunk


def _write_jsonl(slices: Iterator[pl.DataFrame], dest: IO[bytes]) -> None:
    for chunk in slices:
        dest.write(b"".join(to_json(row) + b"\n" for row in chunk.iter_rows(named=True)))


def _write_openai_batch(slices: Iterator[pl.DataFrame], dest: IO[bytes]) -> None:
    for chunk in slices:
        dest.write(
            b"".join(to_json(batch_line(row)) + b"\n" for row in chunk.iter_rows(named=True))
        )


def _write_csv(slices: Iterator[pl.DataFrame], dest: IO[bytes]) -> None:
    for number, chunk in enumerate(slices):
        _flat(chunk).write_csv(dest, include_header=number == 0)


_WRITERS: dict[str, Callable[[Iterator[pl.DataFrame], IO[bytes]], None]] = {
    "jsonl": _write_jsonl,
    "openai-batch": _write_openai_batch,
    "csv": _write_csv,
}


def _flat(chunk: pl.DataFrame) -> pl.DataFrame:
    """Nested columns as JSON text and binary as base64, so every cell fits a CSV field."""
    flat = []
    for series in chunk.iter_columns():
        if series.dtype.is_nested():
            texts = [None if v is None else to_json(v).decode() for v in series.to_list()]
            series = pl.Series(series.name, texts, dtype=pl.String)
        elif series.dtype == pl.Binary:
            series = series.bin.encode("base64")
        flat.append(series)
    return pl.DataFrame(flat)


# -- OpenAI Batch API output lines --------------------------------------------------------------


def batch_line(row: dict[str, Any]) -> dict[str, Any]:
    """One result as an OpenAI Batch API output line, keyed by ``custom_id``."""
    line: dict[str, Any] = {
        "id": f"batch_req_{(row.get('request_hash') or '')[:32]}",
        "custom_id": custom_id(row["row_id"], row["sample"]),
        "response": None,
        "error": None,
    }
    if row["status"] == STATUS_OK:
        line["response"] = {
            "status_code": row.get("http_status") or 200,
            "request_id": None,  # the HTTP request id is not kept
            "body": completion_body(row),
        }
    elif row.get("http_status"):
        error = {"message": row.get("error_message"), "type": row.get("error_type")}
        line["response"] = {
            "status_code": row["http_status"],
            "request_id": None,
            "body": {"error": {**error, "param": None, "code": None}},
        }
    else:
        line["error"] = {"code": row.get("error_type"), "message": row.get("error_message")}
    return line


def completion_body(row: dict[str, Any]) -> dict[str, Any]:
    """The ``chat.completion`` body: the raw response when kept, else rebuilt from columns."""
    raw = row.get("raw_response")
    if raw:
        body: dict[str, Any] = orjson.loads(raw)
        return body
    finished = row.get("finished_at")
    choices = row.get("choices") or [{**row, "index": 0}]
    return {
        "id": row.get("response_id"),
        "object": "chat.completion",
        "created": int(finished.timestamp()) if isinstance(finished, datetime) else None,
        "model": row.get("model"),
        "system_fingerprint": row.get("system_fingerprint"),
        "choices": [_choice(choice) for choice in choices],
        "usage": _usage(row),
    }


def _choice(choice: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": choice.get("content"),
        "refusal": choice.get("refusal"),
    }
    if choice.get("tool_calls"):
        message["tool_calls"] = choice["tool_calls"]
    if choice.get("reasoning_content") is not None:
        message["reasoning_content"] = choice["reasoning_content"]
    logprobs = choice.get("logprobs")
    return {
        "index": choice.get("index", 0),
        "message": message,
        "logprobs": None if logprobs is None else {"content": logprobs, "refusal": None},
        "finish_reason": choice.get("finish_reason"),
    }


def _usage(row: dict[str, Any]) -> dict[str, Any]:
    usage: dict[str, Any] = {
        key: row.get(key) for key in ("prompt_tokens", "completion_tokens", "total_tokens")
    }
    if row.get("cached_tokens") is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": row["cached_tokens"]}
    if row.get("reasoning_tokens") is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": row["reasoning_tokens"]}
    return usage
