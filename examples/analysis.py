"""Look at a batchchat result directory with polars: labels, confidence, cost, latency, errors.

    python examples/analysis.py out/labeling/manual [--plot confidence.png]

Each ``# %%`` block is a notebook cell (VS Code, Jupytext, PyCharm open it as one); each
section is a function from the results table to a small polars table, so a notebook can
call them one by one and keep the tables. ``--plot`` draws the confidence histogram with
matplotlib when it is installed.
"""

# %%
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import polars as pl

import batchchat

#: width of the confidence histogram's bins
BIN = 0.1


def load(out_dir: str | Path) -> pl.DataFrame:
    """One line per (row_id, sample); labeling jobs with samples > 1 carry the row's vote."""
    return batchchat.read_results(out_dir)


# %% Labels: what the model answered, per row (the majority when each row was asked k times)
def label_distribution(df: pl.DataFrame) -> pl.DataFrame:
    """Count and share of each label over rows; ``(unmatched)`` for rows with no label."""
    column = "label_majority" if "label_majority" in df.columns else "label"
    rows = df.filter(pl.col("status") == "ok").group_by("row_id").agg(pl.col(column).first())
    return (
        rows.select(pl.col(column).fill_null("(unmatched)").alias("label"))
        .group_by("label")
        .agg(pl.len().alias("rows"))
        .with_columns((pl.col("rows") / pl.col("rows").sum()).round(3).alias("share"))
        .sort(["rows", "label"], descending=[True, False])
    )


# %% Confidence: how sure the model was of the label it gave (label_confidence, per answer)
def confidence_histogram(df: pl.DataFrame) -> pl.DataFrame:
    """Answers per confidence bin [low, low + BIN), every bin listed, with a text bar."""
    scores = df.get_column("label_confidence").drop_nulls()
    bins = (scores / BIN).floor().clip(0, round(1 / BIN) - 1).cast(pl.Int64)
    counts = dict(bins.value_counts().iter_rows())
    most = max(counts.values(), default=0)
    lows = [round(i * BIN, 2) for i in range(round(1 / BIN))]
    return pl.DataFrame(
        {
            "from": lows,
            "to": [round(low + BIN, 2) for low in lows],
            "answers": [counts.get(i, 0) for i in range(len(lows))],
        }
    ).with_columns(
        pl.col("answers")
        .map_elements(lambda n: "#" * round(40 * n / most) if most else "", pl.String)
        .alias("bar")
    )


# %% Cost: what a thousand rows cost (a row asked k times costs its k answers)
def cost_summary(df: pl.DataFrame) -> pl.DataFrame:
    """Total cost, tokens, and cost per 1k rows and per 1k requests."""
    rows = df.get_column("row_id").n_unique()
    cost = float(df.get_column("cost_usd").fill_null(0).sum())
    return pl.DataFrame(
        {
            "rows": [rows],
            "requests": [df.height],
            "prompt_tokens": [int(df.get_column("prompt_tokens").fill_null(0).sum())],
            "completion_tokens": [int(df.get_column("completion_tokens").fill_null(0).sum())],
            "cost_usd": [cost],
            "usd_per_1k_rows": [cost / rows * 1000 if rows else None],
            "usd_per_1k_requests": [cost / df.height * 1000 if df.height else None],
        }
    )


# %% Latency: milliseconds per request, successful ones
def latency_percentiles(df: pl.DataFrame) -> pl.DataFrame:
    """p50 / p90 / p99 / max latency of the ok requests, in milliseconds."""
    latency = df.filter(pl.col("status") == "ok").get_column("latency_ms")
    return pl.DataFrame(
        {
            "requests": [latency.len()],
            **{
                f"p{int(q * 100)}_ms": [latency.quantile(q, interpolation="linear")]
                for q in (0.5, 0.9, 0.99)
            },
            "max_ms": [latency.max()],
        }
    )


# %% Errors: what failed, how often, and one message of each kind
def error_table(df: pl.DataFrame) -> pl.DataFrame:
    """Failed requests grouped by error type and HTTP status, most frequent first."""
    return (
        df.filter(pl.col("status") == "error")
        .group_by("error_type", "http_status")
        .agg(
            pl.len().alias("requests"),
            pl.col("attempts").max().alias("max_attempts"),
            pl.col("error_message").first().str.slice(0, 80).alias("example"),
        )
        .sort(["requests", "error_type"], descending=[True, False])
    )


# %%
def plot_confidence(df: pl.DataFrame, path: Path) -> bool:
    """Save the confidence histogram as an image; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    histogram = confidence_histogram(df)
    figure, axes = plt.subplots(figsize=(6, 3))
    axes.bar(histogram["from"], histogram["answers"], width=BIN, align="edge")
    axes.set(xlabel="label_confidence", ylabel="answers", xlim=(0, 1))
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="a batchchat output directory")
    parser.add_argument("--plot", type=Path, help="also save the confidence histogram here")
    args = parser.parse_args(argv)
    df = load(args.out_dir)
    pl.Config.set_tbl_hide_dataframe_shape(True)
    pl.Config.set_tbl_width_chars(160)
    pl.Config.set_tbl_cols(-1)
    pl.Config.set_fmt_str_lengths(80)
    ok = df.filter(pl.col("status") == "ok").height
    print(f"{args.out_dir}: {df.height} requests over {df['row_id'].n_unique()} rows, {ok} ok\n")
    if "label" in df.columns:
        print("Labels (per row)", label_distribution(df), sep="\n", end="\n\n")
        print("Confidence of the given label", confidence_histogram(df), sep="\n", end="\n\n")
    print("Cost", cost_summary(df), sep="\n", end="\n\n")
    print("Latency", latency_percentiles(df), sep="\n", end="\n\n")
    errors = error_table(df)
    print("Errors", errors if errors.height else "none", sep="\n")
    if args.plot is not None:
        saved = "label_confidence" in df.columns and plot_confidence(df, args.plot)
        print(f"\nplot: {args.plot if saved else 'not drawn (needs matplotlib and labels)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
