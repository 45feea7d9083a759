"""What users hand-write: the ``openai`` package's AsyncOpenAI with a semaphore.

    python bench/baselines/openai_client.py --url http://127.0.0.1:8000/v1 --n 5000 --concurrency 64

The client is used as its documentation shows (default retries, default connection
pool); results are kept in memory, nothing is written. Prints one JSON line like the
bare baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import openai
from openai import AsyncOpenAI


def prompt(i: int) -> str:
    # the same text batchchat's benchmark input holds (bench/harness.py: prompt)
    return f"Review {i}: the blender works fine but the lid cracked after a week. Sentiment?"


async def main(url: str, n: int, concurrency: int, max_tokens: int) -> dict[str, object]:
    semaphore = asyncio.Semaphore(concurrency)
    results: list[str | None] = [None] * n
    errors = 0

    async with AsyncOpenAI(base_url=url, api_key="sk-bench-not-a-secret") as client:

        async def one(i: int) -> None:
            nonlocal errors
            async with semaphore:
                try:
                    completion = await client.chat.completions.create(
                        model="gpt-4o-mini",
                        messages=[{"role": "user", "content": prompt(i)}],
                        max_tokens=max_tokens,
                    )
                    results[i] = completion.choices[0].message.content or ""
                except openai.OpenAIError:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        window = time.perf_counter() - started
    ok = sum(1 for r in results if r is not None)
    return {"client": "openai", "n": n, "ok": ok, "errors": errors, "window_s": window}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.url, args.n, args.concurrency, args.max_tokens))))
