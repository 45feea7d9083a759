"""What a chained input was read from, kept in the output directory and compared on resume.

A job whose input is another job's output directory records, with its results, which
upstream answer each of its rows was made from: (row id, sample, run id, finish time),
in ``upstream.parquet``, and a summary (path, filter, rows, digest) in the manifest. A
later run of it resumes only when every row it read before still carries the same
answer upstream -- the upstream may have grown (a resumed job with new rows), never
changed -- and says plainly what changed when it did.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from batchchat.results.layout import OutputLayout, write_atomically

#: the columns that say which upstream answer a row is, all as text
ANSWER_IDENTITY = ("row_id", "sample", "run_id", "finished_at")
#: rows named in a message about what changed
_SHOWN = 3


@dataclass(frozen=True)
class InputRecord:
    """The upstream rows a run reads: the directory, the filter, and which answer each is."""

    path: str
    where: str | None
    #: one line per row read, the :data:`ANSWER_IDENTITY` columns as text
    answers: pl.DataFrame

    def summary(self) -> dict[str, Any]:
        """What the manifest keeps (``upstream``): path, filter, rows and a digest."""
        return {
            "path": self.path,
            "where": self.where,
            "rows": self.answers.height,
            "digest": _digest(self.answers),
        }


def _digest(answers: pl.DataFrame) -> str:
    lines = answers.sort("row_id", "sample").select(
        pl.concat_str([pl.col(c).fill_null("") for c in ANSWER_IDENTITY], separator="\x1f")
    )
    digest = hashlib.sha256()
    for line in lines.to_series().to_list():
        digest.update(line.encode() + b"\n")
    return digest.hexdigest()


def save_input_record(layout: OutputLayout, record: InputRecord) -> None:
    """Keep which upstream answers this directory's rows are made from."""
    table = record.answers.to_arrow()
    write_atomically(layout.upstream, lambda handle: pq.write_table(table, handle))


def input_changes(
    layout: OutputLayout, recorded: dict[str, Any] | None, now: InputRecord | None
) -> list[str]:
    """What changed in the chained input since the directory's last run (empty: nothing,
    or the upstream only gained rows)."""
    if recorded is None and now is None:
        return []
    if recorded is None or now is None:
        was = "a file" if recorded is None else f"the output directory {recorded.get('path')}"
        is_now = "a file" if now is None else f"the output directory {now.path}"
        return [f"input.path: was {was}, now {is_now}"]
    lines = [
        f"input.{key}: {recorded.get(key)!r} → {value!r}"
        for key, value in (("path", now.path), ("where", now.where))
        if recorded.get(key) != value
    ]
    if lines or recorded.get("digest") == now.summary()["digest"]:
        return lines
    return _answer_changes(layout, recorded, now)


def _answer_changes(layout: OutputLayout, recorded: dict[str, Any], now: InputRecord) -> list[str]:
    try:
        before = pl.read_parquet(layout.upstream)
    except (OSError, pl.exceptions.PolarsError):
        return [
            f"the results in {now.path} changed since the last run ({recorded.get('rows')} rows "
            "were read then; which ones is not recorded)"
        ]
    lost = before.join(now.answers, on=list(ANSWER_IDENTITY), how="anti", nulls_equal=True)
    if lost.is_empty():
        return []  # the upstream only gained rows: the new ones are this run's to do
    still_there = lost.join(now.answers, on=["row_id", "sample"], how="semi")
    examples = ", ".join(f"{r}#{s}" for r, s in lost.select("row_id", "sample").head(_SHOWN).rows())
    return [
        f"the results in {now.path} changed since the last run (that job ran again): of the "
        f"{before.height:,} rows read then, {still_there.height:,} now carry other answers "
        f"and {lost.height - still_there.height:,} are gone (for example {examples})"
    ]
