"""The result files open unchanged in polars, pandas (pyarrow backend) and DuckDB.

One real labeling run against the simulator (logprobs, label_probs, 3 samples per row);
each reader must see the same values, nested columns included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import polars as pl
import pytest

import batchchat

ROOT = Path(__file__).resolve().parents[1]
ROWS = 6
LABELS = ("positive", "negative", "neutral")


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("interop") / "labeling"
    report = batchchat.run(ROOT / "jobs" / "labeling.yaml", limit=ROWS, output=str(out))
    assert report.rows_ok == ROWS * 3
    return out


@pytest.fixture(scope="module")
def expected(out: Path) -> pl.DataFrame:
    """What batchchat itself reads, one line per (row_id, sample)."""
    return batchchat.read_results(out).sort("row_id", "sample")


def glob(out: Path) -> str:
    return str(out / "results" / "*.parquet")


def test_polars_scans_the_parts(out: Path, expected: pl.DataFrame) -> None:
    df = pl.scan_parquet(glob(out)).sort("row_id", "sample").collect()
    assert df.height == ROWS * 3
    assert df.schema["label_probs"] == pl.Struct({label: pl.Float64 for label in LABELS})
    assert df.schema["logprobs"].inner.fields[0].name == "token"  # type: ignore[union-attr]
    columns = [c for c in df.columns if c in expected.columns]
    assert df.select(columns).equals(expected.select(columns))
    tokens = df.select(pl.col("logprobs").list.eval(pl.element().struct.field("token")))
    joined = tokens.to_series().list.join("")
    assert joined.to_list() == df["content"].to_list()  # the tokens spell the answer


def test_pandas_with_the_pyarrow_backend_keeps_nested_columns(
    out: Path, expected: pl.DataFrame
) -> None:
    df = pd.read_parquet(out / "results", dtype_backend="pyarrow")
    df = df.sort_values(["row_id", "sample"]).reset_index(drop=True)
    assert len(df) == ROWS * 3
    assert isinstance(df["label_probs"].dtype, pd.ArrowDtype)
    positive = df["label_probs"].struct.field("positive").tolist()
    assert positive == expected["label_probs"].struct.field("positive").to_list()
    assert str(df["started_at"].dtype) == "timestamp[us, tz=UTC][pyarrow]"
    logprobs: list[dict[str, Any]] = df["logprobs"].iloc[0]
    assert "".join(t["token"] for t in logprobs) == df["content"].iloc[0]
    assert [t["token"] for t in logprobs[0]["top_logprobs"]] == [
        t["token"] for t in expected["logprobs"][0][0]["top_logprobs"]
    ]
    assert df["label"].tolist() == expected["label"].to_list()


def test_duckdb_queries_the_glob_with_nested_fields(out: Path, expected: pl.DataFrame) -> None:
    con = duckdb.connect()
    counts = con.execute(
        f"SELECT label, count(*) FROM '{glob(out)}' GROUP BY label ORDER BY label"
    ).fetchall()
    want = expected.group_by("label").len().sort("label").rows()
    assert counts == want and sum(n for _, n in counts) == ROWS * 3
    probs = con.execute(
        f"SELECT row_id, sample, label_probs.positive, label_confidence FROM '{glob(out)}' "
        "ORDER BY row_id, sample"
    ).fetchall()
    assert (
        probs
        == expected.select(
            "row_id", "sample", pl.col("label_probs").struct.field("positive"), "label_confidence"
        ).rows()
    )
    first = expected.row(0, named=True)
    alternatives = con.execute(
        f"""
        SELECT alt.token, alt.logprob
        FROM (SELECT unnest(logprobs[1].top_logprobs) AS alt
              FROM '{glob(out)}' WHERE row_id = ? AND sample = ?)
        """,
        [first["row_id"], first["sample"]],
    ).fetchall()
    top = first["logprobs"][0]["top_logprobs"]
    assert alternatives == [(t["token"], t["logprob"]) for t in top]
    assert len(alternatives) == 5  # top_logprobs: 5 in the job
    con.close()
