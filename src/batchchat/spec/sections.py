"""The smaller sections of a job spec: input, seeds, limits, retries, output, prices, budget."""

from __future__ import annotations

import codecs
from typing import Any, Literal

from pydantic import Field, field_validator

from batchchat.spec.base import Strict
from batchchat.spec.where import WhereError, parse_where


class InputSpec(Strict):
    """The dataset: one file, a glob or a directory of Parquet, JSONL or CSV, read in bounded
    batches so a 10-million-row file never sits in memory."""

    #: a file, a glob (``parts/*.parquet``; ``**`` works) or a directory (every data file in
    #: it, recursively; names starting with ``.`` or ``_`` are skipped), relative to the job
    #: file. Files are read in name order and must share their columns. May use ``{{ vars.x }}``
    path: str
    #: ``parquet`` (``.parquet``, ``.pq``), ``jsonl`` (``.jsonl``, ``.ndjson``) or ``csv``;
    #: set it for other suffixes
    #: default: from the file suffix
    format: Literal["parquet", "jsonl", "csv"] | None = None
    #: the column that identifies a row; its value as text is the row id. Must be unique and
    #: never empty; CSV ids stay text (``00042`` is not ``42``)
    #: default: none (the row id is the row's position: ``0``, ``1``, …)
    id_column: str | None = None
    #: read only the first N rows (``run --limit`` and ``plan --limit`` set it)
    #: default: every row
    limit: int | None = Field(default=None, gt=0)
    #: what a malformed JSONL line (or CSV row) does: stop the job naming file and line
    #: (``error``), or get reported and skipped (``skip``)
    on_bad_line: Literal["error", "skip"] = "error"
    #: rows per batch read from the input; bounds memory
    batch_size: int = Field(default=10_000, gt=0)
    #: the text encoding of CSV and JSONL files (Python's codec names: latin-1, cp1252, ...);
    #: a byte that does not decode is an input error naming its file, line and column
    encoding: str = "utf-8"
    #: with a batchchat output directory as ``path`` (chaining): which of its rows, in a small
    #: filter language, e.g. ``label_confidence < 0.6`` (see [Chaining](../cache.md#inputwhere))
    #: default: every ok row
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
    """A seed per request: ``seed: 1234`` sends that seed with every request; the mapping
    form derives one per row and sample, the same on every re-run."""

    #: the seed, or the base the per-row seeds are derived from
    base: int
    #: derive a stable seed from (base, row id, sample) instead of sending ``base`` everywhere
    per_row: bool = False


class LimitsSpec(Strict):
    """Client-side rate limits: requests are paced evenly just under them, assuming the
    server's window is already full, so there is no opening burst of 429s."""

    #: requests per minute
    #: default: no limit
    rpm: int | None = Field(default=None, gt=0)
    #: tokens per minute, charged as servers charge them: the prompt estimate plus every
    #: token the request may produce (``max_tokens`` × ``n``)
    #: default: no limit
    tpm: int | None = Field(default=None, gt=0)
    #: requests (and HTTP connections) in flight at once
    max_concurrency: int = Field(default=64, gt=0, le=4096)
    #: halve concurrency on a 429 without rate-limit headers, a 503 or a timeout, and grow it
    #: back on success: for servers that send no rate-limit headers (vLLM, Ollama, gateways)
    adaptive: bool = True
    #: how prompt tokens are counted for TPM pacing and cost estimates: the offline
    #: estimate, or tiktoken's exact o200k count (installed, with its encoding cached)
    tokenizer: Literal["estimate", "tiktoken"] = "estimate"


class RetrySpec(Strict):
    """The retry policy: exponential backoff with full jitter; the server's ``retry-after``
    wins. Which errors are retried is decided by their type, not here."""

    #: attempts of one request before it fails for good; rate-limited ones do not count
    max_attempts: int = Field(default=6, gt=0)
    #: the longest wait between attempts; a server asking for longer (a daily quota) fails
    max_wait_s: float = Field(default=120.0, gt=0)
    #: the first backoff window while the server shows load (it doubles each attempt)
    initial_wait_s: float = Field(default=1.0, gt=0)
    #: how long a row may keep being refused by rate limits (429s) before it fails
    rate_limit_patience_s: float = Field(default=900.0, gt=0)


class ReaskSpec(Strict):
    """Re-asks of a row whose answer is not valid JSON, does not match the schema, was cut by
    the token limit or is none of the labels, in the same run (``reask: 2`` is ``{count: 2}``)."""

    #: how many times such a row is asked again after its first answer
    count: int = Field(default=2, ge=0, le=10)
    #: show the model its answer and what is wrong with it (a repair turn); ``false``: send the
    #: same request again (useful only when it samples: temperature above 0 and no seed)
    repair: bool = True
    #: the repair turn's text; ``{error}`` is replaced by what is wrong with the answer
    #: default: the error, then "Answer again, with only the corrected answer."
    repair_prompt: str | None = None
    #: an answer cut by the token limit is asked again with the limit times this, again each
    #: time it is cut again
    max_tokens_factor: float = Field(default=2.0, ge=1.0, le=16.0)


class OutputSpec(Strict):
    """Where the results go and which columns they have."""

    #: the output directory, relative to the job file; may use ``{{ vars.x }}``
    #: default: ``out/<name>``
    path: str | None = None
    #: input columns copied into every result row, with their input types
    keep_columns: list[str] = Field(default_factory=list)
    #: ``json``: parse each answer as JSON into the ``parsed`` column, typed from a
    #: ``json_schema`` response format (see [Structured extraction](../extraction.md))
    #: default: none (the answer stays text in ``content``)
    parse: Literal["json"] | None = None
    #: also keep each response's raw JSON in the ``raw_response`` column
    keep_raw: bool = False
    #: a list of labels, or a mapping label → description: each answer is matched to one,
    #: into the ``label`` columns (see [Labeling](../labeling.md))
    #: default: none
    labels: list[str] | dict[str, str] | None = None
    #: the (dotted) field of a JSON answer that holds the label, e.g. ``result.label``
    #: default: none (the whole answer is the label)
    label_field: str | None = None
    #: ask a row again when its answer does not parse, fit the schema or match a label
    #: (``reask: 2`` is ``reask: {count: 2}``; see [Re-asks](../cache.md#re-asks))
    #: default: none (such a row ends with ``parse_error`` or ``label_error``)
    reask: ReaskSpec | None = None
    #: a Parquet part is written every ``part_rows`` results or ``part_seconds``, whichever
    #: comes first
    part_rows: int = Field(default=50_000, gt=0)
    #: …or every ``part_seconds``: a crash loses at most this many seconds of answers
    part_seconds: float = Field(default=10.0, gt=0)

    @field_validator("reask", mode="before")
    @classmethod
    def _count_alone(cls, value: Any) -> Any:
        # `reask: 2` is what people write for "two re-asks, with the repair turn"
        if isinstance(value, int) and not isinstance(value, bool):
            return {"count": value}
        return value


class PriceSpec(Strict):
    """The price of one model, per 1M tokens; it extends or replaces the built-in table's
    entry of the same name (see [Cost and the report](../report.md#your-own-prices-pricing))."""

    #: prompt tokens not served from the cache
    input: float = Field(ge=0)
    #: completion tokens (reasoning tokens included, unless ``reasoning`` is set)
    output: float = Field(ge=0)
    #: prompt tokens served from the cache
    #: default: the ``input`` price
    cached_input: float | None = Field(default=None, ge=0)
    #: reasoning tokens, when the provider prices them apart
    #: default: the ``output`` price
    reasoning: float | None = Field(default=None, ge=0)
    #: a price in another currency needs a ``currency_rates`` entry
    currency: Literal["USD", "CNY"] = "USD"
    #: the share of these prices a Batch API line costs (OpenAI, Azure, DashScope: half)
    batch: float | None = Field(default=0.5, gt=0, le=1)
    #: the share of these prices a ``service_tier: flex`` request costs (OpenAI: batch rates)
    flex: float | None = Field(default=0.5, gt=0, le=1)


class BudgetSpec(Strict):
    """A spending cap per run (see [Budget](../execution.md#budget))."""

    #: stop sending once this run would cost more: each request in flight reserves its worst
    #: case; the run exits with code 3. A re-run starts from zero again
    max_cost_usd: float = Field(gt=0)
