"""The floor: a bare aiohttp loop with a semaphore — no retries, no parsing beyond json.

    python bench/baselines/bare_aiohttp.py --url http://127.0.0.1:8000/v1 --n 20000 --concurrency 64

Prints one JSON line: requests sent, answers ok, errors, and the in-process window
(first request sent → last answer parsed). Wall, CPU and RSS are measured from outside.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp


def prompt(i: int) -> str:
    # the same text batchchat's benchmark input holds (bench/harness.py: prompt)
    return f"Review {i}: the blender works fine but the lid cracked after a week. Sentiment?"


async def main(url: str, n: int, concurrency: int, max_tokens: int) -> dict[str, object]:
    semaphore = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    results: list[str | None] = [None] * n
    errors = 0

    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> None:
            nonlocal errors
            body = {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": prompt(i)}],
                "max_tokens": max_tokens,
            }
            async with semaphore:
                try:
                    async with session.post(f"{url}/chat/completions", json=body) as response:
                        data = await response.json()
                        if response.status == 200:
                            results[i] = data["choices"][0]["message"]["content"]
                        else:
                            errors += 1
                except aiohttp.ClientError:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        window = time.perf_counter() - started
    ok = sum(1 for r in results if r is not None)
    return {"client": "bare_aiohttp", "n": n, "ok": ok, "errors": errors, "window_s": window}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.url, args.n, args.concurrency, args.max_tokens))))
