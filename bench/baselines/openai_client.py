"""What users hand-write: the ``openai`` package's AsyncOpenAI with a semaphore.

    python bench/baselines/openai_client.py --url http://127.0.0.1:8000/v1 --n 5000 --concurrency 64

The client is used as its documentation shows (default retries, default connection
pool); results are kept in memory, nothing is written. Prints one JSON line like the
bare baseline.
"""

from __future__ import annotations

import asyncio

import openai
from _shared import cli, fan_out, prompt
from openai import AsyncOpenAI


async def main(url: str, n: int, concurrency: int, max_tokens: int) -> dict[str, object]:
    semaphore = asyncio.Semaphore(concurrency)
    async with AsyncOpenAI(base_url=url, api_key="sk-bench-not-a-secret") as client:

        async def one(i: int) -> str | None:
            async with semaphore:
                try:
                    completion = await client.chat.completions.create(
                        model="gpt-4o-mini",
                        messages=[{"role": "user", "content": prompt(i)}],
                        max_tokens=max_tokens,
                    )
                except openai.OpenAIError:
                    return None
                return completion.choices[0].message.content or ""

        return await fan_out("openai", n, one)


if __name__ == "__main__":
    cli(main, __doc__ or "")
