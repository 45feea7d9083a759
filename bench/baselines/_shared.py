"""What the two baselines share: the prompt, the timed fan-out and the command line.

Each baseline keeps its own client code (that is what it measures); only the frame
around it lives here, so both are timed and report exactly alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable


def prompt(i: int) -> str:
    # the same text batchchat's benchmark input holds (bench/harness.py: prompt)
    return f"Review {i}: the blender works fine but the lid cracked after a week. Sentiment?"


async def fan_out(
    client: str, n: int, one: Callable[[int], Awaitable[str | None]]
) -> dict[str, object]:
    """Run ``one(i)`` for every row at once (it holds its own semaphore); the JSON summary.

    ``one`` returns the answer text, or None when the request failed.
    """
    started = time.perf_counter()
    answers = await asyncio.gather(*(one(i) for i in range(n)))
    window = time.perf_counter() - started
    ok = sum(answer is not None for answer in answers)
    return {"client": client, "n": n, "ok": ok, "errors": n - ok, "window_s": window}


def cli(main: Callable[..., Awaitable[dict[str, object]]], doc: str) -> None:
    """``--url --n --concurrency --max-tokens [--timeout-s]``; prints ``main``'s summary as
    one JSON line (``--timeout-s`` is passed only when given)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--timeout-s", type=float, help="a whole request's timeout (bare loop)")
    args = parser.parse_args()
    extra = {"timeout_s": args.timeout_s} if args.timeout_s else {}
    summary = main(args.url, args.n, args.concurrency, args.max_tokens, **extra)
    print(json.dumps(asyncio.run(summary)))
