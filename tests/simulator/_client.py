"""A tiny HTTP helper for the simulator tests: one call, status + headers + parsed body."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from batchchat.simulator import SimulatorServer


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    raw: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.raw)


def user(text: str, **extra: Any) -> dict[str, Any]:
    """A minimal valid request body asking ``text``."""
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}


async def chat(
    session: aiohttp.ClientSession,
    sim: SimulatorServer,
    body: Any,
    headers: dict[str, str] | None = None,
    path: str = "/chat/completions",
) -> Reply:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with session.post(
        sim.base_url + path,
        data=data,
        headers={"content-type": "application/json", **(headers or {})},
    ) as response:
        raw = await response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, raw)


async def get(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> Reply:
    async with session.get(url, headers=headers) as response:
        raw = await response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, raw)
