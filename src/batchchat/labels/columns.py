"""Labeling in the output: the label columns, votes across samples, the report's label section.

Per sample, the sink fills ``label``, ``label_error``, ``label_probs`` and
``label_confidence`` through :func:`label_column_group`. With ``samples > 1``
the per-row ``label_majority``, ``label_votes`` and ``label_agreement`` need
every sample of the row, which may sit in different parts: they are added when
results are read (:func:`with_votes`), so they are always computed over the
row's final samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pyarrow as pa
import yaml

from batchchat.labels.labelset import LabelMatch, LabelSet, first_key
from batchchat.models import ChatResult, TokenLogprob
from batchchat.results.columns import ColumnGroup
from batchchat.results.layout import OutputLayout
from batchchat.results.ledger import scan_results
from batchchat.spec import JobSpec


def label_column_group(spec: JobSpec) -> ColumnGroup | None:
    """The per-sample label columns of this job (None when it has no ``output.labels``)."""
    label_set = LabelSet.from_spec(spec)
    if label_set is None:
        return None
    fields = tuple(label_fields(label_set, samples=1))
    label_field = spec.output.label_field
    empty = (None,) * len(fields)

    def extract(result: ChatResult) -> tuple[Any, ...]:
        response = result.response
        if response is None or not response.choices:
            return empty
        choice = response.choices[0]
        values = label_values(
            label_set, choice.content, None, choice.logprobs, label_field=label_field
        )
        return tuple(values[field.name] for field in fields)

    return ColumnGroup("labels", fields, extract)


def with_votes(df: pl.DataFrame, label_set: LabelSet, *, row: str = "row_id") -> pl.DataFrame:
    """``df`` (one line per sample) with the row's majority, votes and agreement on every line.

    Same rule as :func:`vote`; a row whose samples all failed to match gets a
    null majority and agreement 0.
    """
    df = df.drop("label_majority", "label_votes", "label_agreement", strict=False)
    conf = pl.col("label_confidence") if "label_confidence" in df.columns else pl.lit(None)
    lines = df.select(pl.col(row), pl.col("label"), conf.cast(pl.Float64).alias("_conf"))
    order = {label: i for i, label in enumerate(label_set.labels)}
    per_label = (
        lines.filter(pl.col("label").is_not_null())
        .group_by(row, "label")
        .agg(pl.len().alias("_n"), pl.col("_conf").sum().alias("_sum"))
        .with_columns(pl.col("label").replace_strict(order, default=len(order)).alias("_rank"))
        .sort([row, "_n", "_sum", "_rank", "label"], descending=[False, True, True, False, False])
        .group_by(row, maintain_order=True)
        .agg(pl.col("label").first().alias("label_majority"), pl.col("_n").first().alias("_top"))
    )
    counts = [
        (pl.col("label") == label).sum().cast(pl.Int64).alias(label) for label in label_set.labels
    ]
    rows = (
        lines.group_by(row)
        .agg(pl.struct(counts).alias("label_votes"), pl.len().alias("_samples"))
        .join(per_label, on=row, how="left", nulls_equal=True)
        .select(
            row,
            "label_majority",
            "label_votes",
            (pl.col("_top").fill_null(0) / pl.col("_samples")).alias("label_agreement"),
        )
    )
    return df.join(rows, on=row, how="left", nulls_equal=True, maintain_order="left")


# -- columns and report -------------------------------------------------------------------------


def label_fields(label_set: LabelSet, *, samples: int) -> list[pa.Field]:
    """The Arrow columns of labeling.

    ``label``, ``label_error``, ``label_probs`` and ``label_confidence`` are per
    sample. With ``samples > 1``, ``label_majority``, ``label_votes`` and
    ``label_agreement`` are per row: computed across the row's samples and
    repeated on each of its sample lines.
    """
    fields = [
        pa.field("label", pa.string()),
        pa.field("label_error", pa.string()),
        pa.field("label_probs", pa.struct([pa.field(x, pa.float64()) for x in label_set.labels])),
        pa.field("label_confidence", pa.float64()),
    ]
    if samples > 1:
        fields += [
            pa.field("label_majority", pa.string()),
            pa.field("label_votes", pa.struct([pa.field(x, pa.int64()) for x in label_set.labels])),
            pa.field("label_agreement", pa.float64()),
        ]
    return fields


def label_values(
    label_set: LabelSet,
    content: str | None,
    parsed: Any,
    logprobs: list[TokenLogprob] | None,
    *,
    label_field: str | None,
) -> dict[str, Any]:
    """One sample's ``label``, ``label_error``, ``label_probs`` and ``label_confidence``.

    With ``label_field``, ``parsed`` is the JSON output (a mapping or JSON
    text; parsed from ``content`` when None). Probabilities are read at the
    token where the label starts, so "Label: positive" is scored at "positive";
    they are null when the answer matched no label or no logprobs came back.
    """
    if label_field is not None:
        if parsed is None or isinstance(parsed, str):  # not parsed yet, or kept as JSON text
            parsed = _json_of(content if parsed is None else parsed)
        found = label_set.match_parsed(parsed, label_field)
    else:
        found = label_set.match(content)
    at = _anchor(label_set, logprobs or [], content, found)
    probs = None
    if at is not None and logprobs:
        after = logprobs[at + 1] if at + 1 < len(logprobs) else None
        probs = label_set.probabilities(logprobs[at], second_token=after)
    return {
        "label": found.label,
        "label_error": found.error,
        "label_probs": probs,
        "label_confidence": LabelSet.confidence(probs, found.label) if found.label else None,
    }


def _json_of(content: str | None) -> Any:
    if content is None:
        return None
    text = content.strip().removeprefix("```json").removeprefix("```").removesuffix("```")
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def _anchor(
    label_set: LabelSet, tokens: list[TokenLogprob], content: str | None, found: LabelMatch
) -> int | None:
    """The index of the token where the matched label begins."""
    if found.label is None or not tokens:
        return None
    if found.start is not None and "".join(t.token for t in tokens) == content:
        end = 0
        for i, token in enumerate(tokens):
            end += len(token.token)
            if end > found.start:
                if found.label in label_set.labels_for_token(first_key(token.token)):
                    return i
                break
    for i, token in enumerate(tokens):
        if found.label in label_set.labels_for_token(first_key(token.token)):
            return i
    return None


def label_report(df: pl.DataFrame, label_set: LabelSet, *, row: str = "row_id") -> dict[str, Any]:
    """Label distribution, unmatched share and mean confidence of a result table.

    Shares are of the answered lines (a label or a label_error), so the label
    shares and ``unmatched_share`` add up to 1; failed requests are not counted.
    With ``label_majority`` present, ``majority`` gives the same over the rows
    with an answered sample (``unmatched``: rows without a majority label).
    """
    answered = df.filter(pl.col("label").is_not_null() | pl.col("label_error").is_not_null())
    total = answered.height
    report: dict[str, Any] = _distribution(answered["label"], label_set, total)
    unmatched = answered["label"].null_count()
    report["unmatched"] = unmatched
    report["unmatched_share"] = unmatched / total if total else None
    confidence = answered["label_confidence"] if "label_confidence" in df.columns else None
    report["mean_confidence"] = _mean(confidence)
    if "label_majority" in df.columns and row in df.columns:
        rows = answered.group_by(row).agg(pl.col("label_majority", "label_agreement").first())
        majority = _distribution(rows["label_majority"], label_set, rows.height)
        majority["unmatched"] = rows["label_majority"].null_count()
        majority["mean_agreement"] = _mean(rows["label_agreement"])
        report["majority"] = majority
    return report


def _distribution(column: pl.Series, label_set: LabelSet, total: int) -> dict[str, Any]:
    counts = dict(column.drop_nulls().value_counts().iter_rows())
    shares = {x: {"count": counts.get(x, 0)} for x in label_set.labels}
    for share in shares.values():
        share["share"] = share["count"] / total if total else None
    return {"answered": total, "labels": shares}  # answered lines, or rows for the majority


def _mean(column: pl.Series | None) -> float | None:
    value = None if column is None else column.cast(pl.Float64).mean()
    return float(value) if isinstance(value, int | float) else None


def output_label_set(out_dir: Path) -> tuple[LabelSet | None, int]:
    """The label set and samples per row of the job that wrote ``out_dir`` (from its job.yaml)."""
    path = OutputLayout(out_dir).job_yaml
    if not path.is_file():
        return None, 1
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    labels = (data.get("output") or {}).get("labels")
    samples = int(data.get("samples") or 1)
    return (LabelSet(labels) if labels else None), samples


#: the result columns the labels section of the report reads
_REPORT_COLUMNS = ("row_id", "sample", "label", "label_error", "label_confidence")


def read_label_report(out_dir: Path, label_set: LabelSet, *, samples: int) -> dict[str, Any] | None:
    """The report's labels section, from the ledger's label columns only (never every column)."""
    rows = scan_results(out_dir)
    names = rows.collect_schema().names()
    if "label" not in names:
        return None
    lines = rows.select(name for name in _REPORT_COLUMNS if name in names).collect()
    if samples > 1:
        lines = with_votes(lines, label_set)
    return label_report(lines, label_set)


def add_label_summaries(df: pl.DataFrame, out_dir: Path) -> pl.DataFrame:
    """``df`` with the per-row vote columns when the job labels with ``samples > 1``."""
    label_set, samples = output_label_set(out_dir)
    if label_set is None or samples <= 1 or "label" not in df.columns:
        return df
    return with_votes(df, label_set)
