"""Plan a generated 1M-row Parquet input in bounded memory; print peak RSS and rows/s.

    python bench/plan_memory.py                    # 1,000,000 rows
    python bench/plan_memory.py --rows 200000 --max-rss-mb 400

Not a test: it takes a while and its numbers depend on the machine. It
generates the input, then plans it in a fresh child process (so the
generator's memory does not count) three ways: reading ids only (every
request skipped, as when resuming a finished run), planning everything, and
planning with ``--out``-style Batch API lines serialised. The exit status is 1
when the child's peak RSS passes ``--max-rss-mb``: planning must not grow with
the input.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from _child import run_child, status_kb

QUICKSTART_LIKE = """\
name: bench-plan
input:
  path: {path}
  id_column: id
  batch_size: {batch_size}
endpoint:
  base_url: simulator
request:
  model: gpt-4o-mini
  messages:
    - role: system
      content: |-
        You label the sentiment of product reviews.
        Answer with one of: positive, negative, neutral, mixed
    - role: user
      content: "Product: {{{{ product }}}}\\nRating: {{{{ rating }}}}/5\\nReview: {{{{ text }}}}"
  temperature: 0
  max_tokens: 4
output:
  keep_columns: [id, text]
"""

WORDS = [
    *("great", "terrible", "fine", "mug", "kettle", "battery", "arrived", "broken"),
    *("quickly", "slowly", "love", "hate", "price", "quality", "cheap", "expensive"),
    *("shipping", "support", "refund", "color", "size", "works", "leaks"),
]


def generate(path: Path, rows: int, chunk: int = 100_000) -> None:
    """A Parquet file of ``rows`` review-like rows, written a chunk at a time."""
    import polars as pl
    import pyarrow.parquet as pq

    rng = random.Random(7)
    writer = None
    try:
        for start in range(0, rows, chunk):
            size = min(chunk, rows - start)
            frame = pl.DataFrame(
                {
                    "id": [f"rev-{i:08d}" for i in range(start, start + size)],
                    "product": [rng.choice(WORDS).title() + " 3000" for _ in range(size)],
                    "rating": [rng.randint(1, 5) for _ in range(size)],
                    "text": [
                        " ".join(rng.choices(WORDS, k=rng.randint(15, 45))) for _ in range(size)
                    ],
                    "lang": ["en"] * size,
                }
            )
            table = frame.to_arrow()
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table, row_group_size=50_000)
    finally:
        if writer is not None:
            writer.close()


def child(spec_path: str) -> None:
    """Plan the spec three ways; print one JSON line of measurements."""
    from batchchat.planning.estimate import batch_line
    from batchchat.planning.planner import compile_plan
    from batchchat.spec import load_spec

    plan = compile_plan(load_spec(spec_path))
    baseline_kb = status_kb("VmHWM")
    timings: dict[str, float] = {}

    started = time.perf_counter()
    skipped = sum(1 for _ in plan.requests(skip=lambda ids, sample: ids.is_not_null()))
    timings["read_ids_only_s"] = time.perf_counter() - started

    started = time.perf_counter()
    requests = tokens = 0
    for request in plan.requests():
        requests += 1
        tokens += request.est_prompt_tokens
    timings["plan_s"] = time.perf_counter() - started

    started = time.perf_counter()
    written = sum(len(batch_line(request)) for request in plan.requests())
    timings["plan_and_serialise_s"] = time.perf_counter() - started

    peak_kb = status_kb("VmHWM")
    print(
        json.dumps(
            {
                "requests": requests,
                "skipped_pass_requests": skipped,
                "prompt_tokens": tokens,
                "batch_api_bytes": written,
                "baseline_rss_mb": baseline_kb / 1024,
                "peak_rss_mb": peak_kb / 1024,
                **timings,
            }
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--max-rss-mb", type=float, default=500.0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return 0
    with tempfile.TemporaryDirectory(prefix="batchchat-bench-") as tmp:
        data = Path(tmp) / "reviews.parquet"
        started = time.perf_counter()
        generate(data, args.rows)
        print(f"generated {args.rows:,} rows ({data.stat().st_size / 1e6:.1f} MB Parquet) "
              f"in {time.perf_counter() - started:.1f}s")  # fmt: skip
        spec = Path(tmp) / "bench.yaml"
        spec.write_text(QUICKSTART_LIKE.format(path=data, batch_size=args.batch_size))
        result = run_child([__file__, "--child", str(spec)])
    if result is None:
        return 2
    _report(result, args.rows, args.max_rss_mb)
    return 0 if result["peak_rss_mb"] <= args.max_rss_mb else 1


def _report(result: dict[str, float], rows: int, max_rss_mb: float) -> None:
    render_us = (result["plan_s"] - result["read_ids_only_s"]) / rows * 1e6
    verdict = "OK" if result["peak_rss_mb"] <= max_rss_mb else "OVER THE LIMIT"
    lines = [
        ("requests planned", f"{result['requests']:,} (~{result['prompt_tokens']:,} tokens)"),
        ("read + ids only", f"{rows / result['read_ids_only_s']:,.0f} rows/s (all skipped)"),
        ("plan", f"{rows / result['plan_s']:,.0f} rows/s (~{render_us:.1f} µs/row past reading)"),
        ("plan + Batch API lines", f"{rows / result['plan_and_serialise_s']:,.0f} rows/s"),
        ("RSS after imports", f"{result['baseline_rss_mb']:.0f} MB"),
        ("peak RSS", f"{result['peak_rss_mb']:.0f} MB (limit {max_rss_mb:.0f} MB: {verdict})"),
    ]
    for label, value in lines:
        print(f"{label:<24}{value}")


if __name__ == "__main__":
    raise SystemExit(main())
