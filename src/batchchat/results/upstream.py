"""A batchchat output directory read as the input of the next job: chaining.

The rows are the upstream's results as ``read_results`` gives them, one per (row id,
sample), kept when their final outcome is ok -- a row that failed upstream has nothing
for the next stage to read -- then filtered by ``input.where``. Every result column
(``content``, ``parsed``, ``label``, ``label_confidence``, …) and every kept input
column is there for templates.

:func:`upstream_identity` is what the rows came from: the directory, the filter, and a
digest of which upstream answer each row is (its row id, sample, run and finish time). A
downstream output directory records it in its manifest, and a later run of the
downstream job refuses to resume when it changed: the upstream was re-run or resumed
since, so the same row ids may now carry other answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from batchchat.errors import InputError
from batchchat.results.columns import STATUS_OK
from batchchat.results.inputs import ANSWER_IDENTITY, InputRecord
from batchchat.results.layout import OutputLayout
from batchchat.results.ledger import scan_results
from batchchat.results.status import read_status
from batchchat.spec.where import parse_where


@dataclass(frozen=True)
class Upstream:
    """The results of an upstream job, as the rows of a downstream one."""

    path: Path
    where: str | None
    rows: pl.LazyFrame
    #: which upstream answers the rows are (kept downstream, compared on resume)
    record: InputRecord
    #: whether a row id occurs with several samples (the upstream had ``samples > 1``)
    has_samples: bool = False
    warnings: list[str] = field(default_factory=list)


def is_output_dir(path: Path) -> bool:
    """Whether ``path`` is a batchchat output directory (it has a manifest)."""
    return OutputLayout(path).manifest.is_file()


def open_upstream(path: Path, where: str | None = None) -> Upstream:
    """The ok results of the output directory ``path``, filtered by ``where``.

    InputError when a run is writing it now, when ``where`` names a column it lacks or
    compares values of different types, or when nothing can be read.
    """
    status = read_status(path)
    if status.state == "running":
        holder = status.holder.describe() if status.holder else "another process"
        raise InputError(
            f"input.path: {path} is being written by a run now ({holder}); chain from it "
            "once that run has finished"
        )
    rows = scan_results(path).filter(pl.col("status") == STATUS_OK)
    if where is not None:
        rows = rows.filter(parse_where(where))
    chosen = _read_identity(rows, path, where)
    warnings = []
    if status.state == "partial":
        warnings.append(
            f"input.path: the last run of {path} did not finish ({status.ok:,} rows ok so "
            "far): only those are read; run that job again first to read them all"
        )
    if status.failed:
        warnings.append(
            f"input.path: {status.failed:,} rows of {path} failed there and are not read "
            "(re-run that job to retry them)"
        )
    record = InputRecord(str(path), where, chosen)
    has_samples = bool((chosen.get_column("sample") != "0").any())
    return Upstream(path, where, rows, record, has_samples, warnings)


def _read_identity(rows: pl.LazyFrame, path: Path, where: str | None) -> pl.DataFrame:
    try:
        have = rows.collect_schema().names()
        return rows.select(
            pl.col(name).cast(pl.String) if name in have else pl.lit("", pl.String).alias(name)
            for name in ANSWER_IDENTITY
        ).collect(engine="streaming")
    except pl.exceptions.PolarsError as exc:
        first = str(exc).strip().splitlines()[0]
        if where is not None:
            raise InputError(f"input.where: {where!r} cannot filter {path}: {first}") from None
        raise InputError(f"input.path: cannot read the results of {path}: {first}") from None
