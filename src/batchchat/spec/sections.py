"""The smaller sections of a job spec: input, seeds, limits, retries, output, prices, budget."""

from __future__ import annotations

import codecs
from typing import Any, Literal

from pydantic import Field, field_validator

from batchchat.spec.base import Strict
from batchchat.spec.where import WhereError, parse_where


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
    #: a filter over the rows of a batchchat output directory read as input (chaining), in
    #: the small language of :mod:`batchchat.spec.where`: ``label_confidence < 0.6``
    where: str | None = None

    @field_validator("where")
    @classmethod
    def _is_a_filter(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_where(value)
            except WhereError as exc:
                raise ValueError(f"not a filter: {exc} (see docs/cache.md, Chaining)") from None
        return value

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


class ReaskSpec(Strict):
    """What a row whose answer fails its check (JSON, schema, label, cut short) gets."""

    #: how many times such a row is asked again, after its first answer
    count: int = Field(default=2, ge=0, le=10)
    #: show the model its answer and what is wrong with it (a repair turn); false: send
    #: the same request again (useful only when it samples: temperature > 0, no seed)
    repair: bool = True
    #: the repair turn's text; ``{error}`` is replaced by what is wrong with the answer
    repair_prompt: str | None = None
    #: an answer cut by the token limit is asked again with the limit times this
    max_tokens_factor: float = Field(default=2.0, ge=1.0, le=16.0)


class OutputSpec(Strict):
    #: output directory; default ``out/<job name>``; may use ``{{ vars.x }}``
    path: str | None = None
    keep_columns: list[str] = Field(default_factory=list)
    parse: Literal["json"] | None = None
    keep_raw: bool = False
    labels: list[str] | dict[str, str] | None = None
    label_field: str | None = None
    #: re-asks of rows whose answer does not parse, fit the schema or match a label
    #: (``reask: 2`` is ``reask: {count: 2}``)
    reask: ReaskSpec | None = None
    #: a part is written every ``part_rows`` results or ``part_seconds``, whichever first
    part_rows: int = Field(default=50_000, gt=0)
    part_seconds: float = Field(default=10.0, gt=0)

    @field_validator("reask", mode="before")
    @classmethod
    def _count_alone(cls, value: Any) -> Any:
        # `reask: 2` is what people write for "two re-asks, with the repair turn"
        if isinstance(value, int) and not isinstance(value, bool):
            return {"count": value}
        return value


class PriceSpec(Strict):
    """Prices per 1M tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)
    reasoning: float | None = Field(default=None, ge=0)
    currency: Literal["USD", "CNY"] = "USD"


class BudgetSpec(Strict):
    max_cost_usd: float = Field(gt=0)
