"""The floor: a bare aiohttp loop with a semaphore — no retries, no parsing beyond json.

    python bench/baselines/bare_aiohttp.py --url http://127.0.0.1:8000/v1 --n 20000 --concurrency 64

Prints one JSON line: requests sent, answers ok, errors, and the in-process window
(first request sent → last answer parsed). Wall, CPU and RSS are measured from outside.
"""

from __future__ import annotations

import asyncio

import aiohttp
from _shared import cli, fan_out, prompt


async def main(
    url: str, n: int, concurrency: int, max_tokens: int, timeout_s: float | None = None
) -> dict[str, object]:
    semaphore = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=timeout_s) if timeout_s else aiohttp.ClientTimeout()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int) -> str | None:
            body = {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": prompt(i)}],
                "max_tokens": max_tokens,
            }
            async with semaphore:
                try:
                    async with session.post(f"{url}/chat/completions", json=body) as response:
                        data = await response.json()
                        if response.status != 200:
                            return None
                        return str(data["choices"][0]["message"]["content"])
                except (aiohttp.ClientError, TimeoutError):  # a stall past --timeout-s
                    return None

        return await fan_out("bare_aiohttp", n, one)


if __name__ == "__main__":
    cli(main, __doc__ or "")
