"""The smaller sections of a job spec: input, seeds, limits, retries, output, prices, budget."""

from __future__ import annotations

import codecs
from typing import Literal

from pydantic import Field, field_validator

from batchchat.spec.base import Strict


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
    #: the share of these prices a Batch API line costs (OpenAI, Azure, DashScope: half)
    batch: float | None = Field(default=0.5, gt=0, le=1)
    #: the share of these prices a ``service_tier: flex`` request costs (OpenAI: batch rates)
    flex: float | None = Field(default=0.5, gt=0, le=1)


class BudgetSpec(Strict):
    max_cost_usd: float = Field(gt=0)
