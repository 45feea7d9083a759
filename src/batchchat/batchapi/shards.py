"""Planned requests → shards: Batch API input files on disk, cut by model, lines, bytes, tokens.

One model per file (the Batch API's rule); a file is closed once the next line would pass
``batch.lines_per_batch``, ``batch.bytes_per_batch`` or, with ``batch.max_enqueued_tokens``,
the tokens a wave may hold. Beside each input file, ``<shard>.lines.parquet`` says which
row each line is (ids, request hash, seed, token estimate, kept columns), so an answer is
joined to its own row by ``custom_id`` without planning the job again. Both files appear
whole or not at all, and a shard is in the state only once both are on disk. Memory holds
one open shard per model, never the job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from batchchat.batchapi.state import Shard
from batchchat.models import ChatRequest
from batchchat.planning.estimate import batch_line
from batchchat.results.layout import AtomicFile, OutputLayout, write_atomically
from batchchat.spec import BatchSpec

#: the columns of a lines file besides the kept input columns (``keep``, a struct)
LINE_SCHEMA: dict[str, pl.DataType] = {
    "row_id": pl.String(),
    "sample": pl.Int64(),
    "custom_id": pl.String(),
    "request_hash": pl.String(),
    "seed": pl.Int64(),
    "prompt_tokens": pl.Int64(),
    "max_output_tokens": pl.Int64(),
    "row_index": pl.Int64(),
    # the request's temperature: the response cache keeps only deterministic answers
    "temperature": pl.Float64(),
}


class ShardFile:
    """One shard being written: its input lines and, at the end, its lines file."""

    def __init__(
        self, layout: OutputLayout, shard: Shard, keep_types: Mapping[str, pl.DataType]
    ) -> None:
        self.shard = shard
        self._layout = layout
        self._keep_types = keep_types
        self._input = AtomicFile(layout.batch_input(shard.id), what="a batch input file")
        self._handle = self._input.__enter__()
        self._columns: dict[str, list[Any]] = {name: [] for name in LINE_SCHEMA}
        self._keep: list[dict[str, Any]] = []

    def add(self, line: bytes, row: Mapping[str, Any], keep: Mapping[str, Any]) -> None:
        """Append one input line and which row it is (``row`` has LINE_SCHEMA's keys)."""
        self._handle.write(line)
        for name, values in self._columns.items():
            values.append(row[name])
        if self._keep_types:
            self._keep.append(dict(keep))
        self.shard.lines += 1
        self.shard.bytes += len(line)
        self.shard.tokens += int(row["prompt_tokens"])

    def commit(self) -> Shard:
        """Write the lines file, then make the input file appear; the finished shard."""
        frame = pl.DataFrame(self._columns, schema=LINE_SCHEMA)
        if self._keep_types:
            kept = pl.DataFrame(self._keep, schema=dict(self._keep_types), orient="row")
            frame = frame.with_columns(kept.to_struct("keep"))
        write_atomically(
            self._layout.batch_lines(self.shard.id),
            lambda handle: frame.write_parquet(handle),
            what="a batch lines file",
        )
        self._input.__exit__(None, None, None)
        return self.shard

    def discard(self) -> None:
        self._input.__exit__(RuntimeError, RuntimeError("discarded"), None)


@dataclass
class Sharder:
    """Requests → shards, one open shard per model; ``on_shard`` sees each finished one."""

    layout: OutputLayout
    settings: BatchSpec
    keep_types: Mapping[str, pl.DataType]
    new_id: Callable[[], str]
    on_shard: Callable[[Shard], None]
    #: a request that fits no batch (too many bytes or tokens alone): why
    on_oversize: Callable[[ChatRequest, str], None]
    #: the most a request can cost at batch prices (None: unknown)
    worst_cost: Callable[[ChatRequest], float | None] = lambda _: None
    _open: dict[str, ShardFile] = field(default_factory=dict)

    def add(self, request: ChatRequest) -> None:
        line = batch_line(request, self.settings.url)
        too_big = self._too_big(request, line)
        if too_big is not None:
            self.on_oversize(request, too_big)
            return
        model = str(request.body.get("model"))
        current = self._open.get(model)
        if current is not None and not self._fits(current.shard, request, line):
            self.on_shard(current.commit())
            current = None
        if current is None:
            shard = Shard(self.new_id(), model, 0, 0, 0, worst_cost_usd=0.0)
            current = self._open[model] = ShardFile(self.layout, shard, self.keep_types)
        current.add(line, line_row(request), request.keep)
        shard = current.shard
        worst = self.worst_cost(request)
        if shard.worst_cost_usd is not None:
            shard.worst_cost_usd = None if worst is None else shard.worst_cost_usd + worst

    def close(self) -> None:
        """Finish every open shard."""
        for model in list(self._open):
            self.on_shard(self._open.pop(model).commit())

    def discard(self) -> None:
        """Drop the open shards (planning failed): nothing half-written stays."""
        for model in list(self._open):
            self._open.pop(model).discard()

    def _fits(self, shard: Shard, request: ChatRequest, line: bytes) -> bool:
        settings = self.settings
        tokens = settings.max_enqueued_tokens
        return (
            shard.lines < settings.lines_per_batch
            and shard.bytes + len(line) <= settings.bytes_per_batch
            and (tokens is None or shard.tokens + request.est_prompt_tokens <= tokens)
        )

    def _too_big(self, request: ChatRequest, line: bytes) -> str | None:
        settings = self.settings
        if len(line) > settings.bytes_per_batch:
            return (
                f"its Batch API line is {len(line):,} bytes, more than a batch may hold "
                f"(batch.bytes_per_batch: {settings.bytes_per_batch:,})"
            )
        tokens = settings.max_enqueued_tokens
        if tokens is not None and request.est_prompt_tokens > tokens:
            return (
                f"its prompt is ~{request.est_prompt_tokens:,} tokens, more than a wave may "
                f"hold (batch.max_enqueued_tokens: {tokens:,})"
            )
        return None


def line_row(request: ChatRequest) -> dict[str, Any]:
    """What a lines file says of a request's line."""
    return {
        "row_id": request.row_id,
        "sample": request.sample,
        "custom_id": request.custom_id,
        "request_hash": request.request_hash,
        "seed": request.seed,
        "prompt_tokens": request.est_prompt_tokens,
        "max_output_tokens": request.max_output_tokens,
        "row_index": request.row_index,
        "temperature": _temperature(request.body),
    }


def read_lines(layout: OutputLayout, shard_id: str) -> pl.DataFrame:
    """A shard's lines file (which row each line of its input file is, in order)."""
    return pl.read_parquet(layout.batch_lines(shard_id))


def request_of(row: Mapping[str, Any], model: str) -> ChatRequest:
    """The request a line of a lines file stands for (its body holds only the model and
    the temperature, what the results and the response cache read of it)."""
    temperature = row.get("temperature")
    body: dict[str, Any] = {"model": model}
    if temperature is not None:
        body["temperature"] = temperature
    return ChatRequest(
        row_id=row["row_id"],
        sample=row["sample"],
        custom_id=row["custom_id"],
        body=body,
        request_hash=row["request_hash"],
        est_prompt_tokens=row["prompt_tokens"],
        max_output_tokens=row["max_output_tokens"],
        seed=row["seed"],
        keep=dict(row.get("keep") or {}),
        row_index=row.get("row_index"),
    )


def _temperature(body: Mapping[str, Any]) -> float | None:
    value = body.get("temperature")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def input_lines(path: Path) -> Iterator[bytes]:
    """The lines of an input file, as written (newline included)."""
    with open(path, "rb") as handle:
        yield from handle


def split_shard(
    layout: OutputLayout,
    parent: Shard,
    chosen: set[str],
    new_shard: Shard,
    keep_types: Mapping[str, pl.DataType],
) -> Shard | None:
    """A new shard of the ``chosen`` custom ids of ``parent`` (None when none is chosen)."""
    if not chosen:
        return None
    lines = read_lines(layout, parent.id)
    writer = ShardFile(layout, new_shard, keep_types)
    try:
        rows = lines.iter_rows(named=True)
        for raw, row in zip(input_lines(layout.batch_input(parent.id)), rows, strict=True):
            if row["custom_id"] in chosen:
                writer.add(raw, row, row.get("keep") or {})
    except BaseException:
        writer.discard()
        raise
    return writer.commit()
