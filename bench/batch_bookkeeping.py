"""Batch mode's bookkeeping for 1M lines: sharding, the pending index, and joining answers.

    python bench/batch_bookkeeping.py                       # 100,000 and 1,000,000 lines
    python bench/batch_bookkeeping.py --rows 200000         # one size
    python bench/batch_bookkeeping.py --max-growth 1.25     # exit 1 when memory grows more

Not a test: it takes a few minutes and its numbers depend on the machine. No network: the
Batch API is the transport seam (:class:`MockTransport`) answering each download with an
output file made for the shard, every line answered, in shuffled order, as a provider
writes them. For each size, in a fresh child process:

1. **shard**: plan every request of a generated Parquet input and write the shards
   (50,000 lines and 200 MB per input file, OpenAI's limits) and their lines files;
2. **pending index**: what a re-run reads to plan no line twice (every line is pending);
3. **join**: collect every shard (``batchapi.collect``, the real code): download its output,
   join each line to its row by custom_id, write typed results through the Parquet sink;
   then compact and check one ok row per line.

Peak RSS is read per stage (VmHWM, reset between stages), so "flat" is checked where it
must hold: sharding and joining hold one shard at a time whatever the job's size; the
pending index, like the resume index, holds a key per pending line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from plan_memory import QUICKSTART_LIKE, generate

SIZES = (100_000, 1_000_000)


def completion(model: str) -> bytes:
    """The body every line is answered with (the sizes of a short real answer)."""
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "system_fingerprint": "fp_bench",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "positive", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 60, "completion_tokens": 1, "total_tokens": 61},
    }
    return json.dumps(body).encode()


def child(spec_path: str, out_dir: str) -> None:
    """Run the three stages; print one JSON line of measurements."""
    import orjson
    import polars as pl

    from batchchat.batchapi.client import BatchClient
    from batchchat.batchapi.collect import BatchRun, collect
    from batchchat.batchapi.executor import shard_requests
    from batchchat.batchapi.state import BatchState, pending_index
    from batchchat.execute.transport import HTTPRequest, HTTPResponse, MockTransport
    from batchchat.job import compile_job
    from batchchat.models import ExecutionStats
    from batchchat.results.encoder import ResultEncoder
    from batchchat.results.layout import OutputLayout
    from batchchat.results.ledger import compact_parts
    from batchchat.results.sink import ParquetSink
    from batchchat.spec import load_spec

    spec = load_spec(spec_path)
    job = compile_job(spec, require_key=False)
    layout = OutputLayout(out_dir)
    state = BatchState("bench")
    body = completion("gpt-4o-mini")

    def serve(request: HTTPRequest) -> HTTPResponse:
        """A provider's output file for the shard named in the URL: every line answered."""
        shard_id = request.url.rsplit("/", 2)[-2].removeprefix("out-")
        ids = pl.read_parquet(layout.batch_lines(shard_id), columns=["custom_id"])["custom_id"]
        lines = [
            b'{"id":"batch_req_x","custom_id":' + orjson.dumps(cid) + b',"response":'
            b'{"status_code":200,"request_id":"r","body":' + body + b'},"error":null}'
            for cid in ids.to_list()
        ]
        random.Random(shard_id).shuffle(lines)
        return HTTPResponse(200, {}, b"\n".join(lines))

    client = BatchClient(
        MockTransport(serve), "http://bench/v1", {}, retry=spec.retry, display="bench"
    )
    stats = ExecutionStats("bench", started_at=_now())
    sink = ParquetSink(
        layout.results,
        ResultEncoder(job.columns, run_id="bench"),
        part_rows=spec.output.part_rows,
        part_seconds=1e9,
    )
    keep = {name: job.plan.source.schema[name] for name in spec.output.keep_columns}
    run = BatchRun(
        layout, state, spec.batch, client, job.prices, keep, False, sink.write, sink.flush, stats
    )
    run.on_results = sink.write_many
    found: dict[str, Any] = {"baseline_rss_mb": _peak_rss_mb()}

    def on_oversize(request: object, why: str) -> None:
        raise AssertionError(why)

    started = time.perf_counter()
    asyncio.run(shard_requests(run, job.plan.requests(check_ids=False), on_oversize))
    found["shard_s"] = time.perf_counter() - started
    found["shards"] = len(state.shards)
    found["lines"] = sum(shard.lines for shard in state.shards)
    found["input_mb"] = sum(shard.bytes for shard in state.shards) / 2**20
    found["shard_peak_rss_mb"] = _peak_rss_mb(reset=True)

    started = time.perf_counter()
    index = pending_index(layout, state.live())
    found["pending_index_s"] = time.perf_counter() - started
    found["pending_index_peak_rss_mb"] = _peak_rss_mb(reset=True)
    del index

    async def join() -> None:
        for shard in state.shards:
            shard.phase, shard.status = "submitted", "completed"
            shard.batch_id, shard.output_file_id = f"batch_{shard.id}", f"out-{shard.id}"
            await collect(run, shard)

    started = time.perf_counter()
    asyncio.run(join())
    sink.close()
    found["join_s"] = time.perf_counter() - started
    found["join_peak_rss_mb"] = _peak_rss_mb(reset=True)
    started = time.perf_counter()
    compact_parts(layout.results)
    rows = pl.scan_parquet(layout.results / "*.parquet").select(
        pl.len(), pl.col("row_id").n_unique(), (pl.col("status") == "ok").all()
    )
    total, unique, all_ok = rows.collect().row(0)
    found["compact_and_check_s"] = time.perf_counter() - started
    found["results_ok"] = bool(total == unique == found["lines"] and all_ok)
    print(json.dumps(found))


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def _peak_rss_mb(*, reset: bool = False) -> float:
    """Peak RSS since the last reset (VmHWM; writing 5 to clear_refs resets it)."""
    peak = 0
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1])
    if reset:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    return peak / 1024


def measure(rows: int, work: Path) -> dict[str, Any]:
    data = work / f"reviews-{rows}.parquet"
    if not data.exists():
        generate(data, rows)
    spec = work / f"job-{rows}.yaml"
    text = QUICKSTART_LIKE.format(path=data, batch_size=10_000)
    spec.write_text(text + "mode: batch\nbatch: {delete_files: false}\n")
    out = work / f"out-{rows}"
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(spec), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    return {"rows": rows, **json.loads(done.stdout.strip().splitlines()[-1])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, action="append", help="a size (repeatable)")
    parser.add_argument(
        "--max-growth",
        type=float,
        default=1.25,
        help="most the sharding and joining peak RSS may grow from the smallest size",
    )
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    sizes = sorted(args.rows or SIZES)
    with tempfile.TemporaryDirectory(prefix="batchchat-bench-") as tmp:
        found = [measure(rows, Path(tmp)) for rows in sizes]
    keys = (
        "rows", "shards", "input_mb", "shard_s", "shard_peak_rss_mb", "pending_index_s",
        "pending_index_peak_rss_mb", "join_s", "join_peak_rss_mb", "compact_and_check_s",
        "results_ok",
    )  # fmt: skip
    for item in found:
        print("  ".join(f"{key}={_shown(item[key])}" for key in keys))
    base = found[0]
    growth = max(
        item[stage] / base[stage]
        for item in found
        for stage in ("shard_peak_rss_mb", "join_peak_rss_mb")
    )
    print(f"sharding/joining peak RSS growth from {base['rows']:,} rows: ×{growth:.2f}")
    ok = all(item["results_ok"] for item in found) and growth <= args.max_growth
    return 0 if ok else 1


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
