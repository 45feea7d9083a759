"""The real servers the conformance suite talks to, and a bare aiohttp client for them.

Nothing here fakes a server: every helper sends real HTTP to llama.cpp's ``llama-server``
or the LiteLLM proxy on loopback, started by the scripts in ``/work/shared/realserver``.
"""

from __future__ import annotations

import asyncio
import re
import urllib.request
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest

SCRIPTS = "/work/shared/realserver"
LITELLM_KEY = "sk-realserver-test-5f2c9a7e1b3d4c6f8a0e2b4d6f8a1c3e"
KEY_ENV = "REALSERVER_API_KEY"


@dataclass(frozen=True)
class Server:
    name: str
    root: str  # scheme://host:port
    health: str  # path answering 200 when the server is up
    model: str
    start: str  # the command that starts it
    key: str | None = None

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    def headers(self, key: str | None = None) -> dict[str, str]:
        key = key or self.key
        return {"Authorization": f"Bearer {key}"} if key else {}


LLAMA = Server(
    "llama-server (--jinja)",
    "http://127.0.0.1:8004",
    "/health",
    "tiny",
    f"{SCRIPTS}/llama-server/run.sh start",
)
LLAMA_NOJINJA = Server(
    "llama-server (--no-jinja)",
    "http://127.0.0.1:8005",
    "/health",
    "tiny",
    f"REALSERVER_DIR=~/.cache/batchchat-realserver-nojinja LLAMA_EXTRA_ARGS=--no-jinja "
    f"{SCRIPTS}/llama-server/run.sh start 8005",
)
LITELLM = Server(
    "LiteLLM proxy",
    "http://127.0.0.1:8003",
    "/health/liveliness",
    "mock-gpt",
    f"{SCRIPTS}/litellm/run.sh start",
    key=LITELLM_KEY,
)


def is_up(server: Server) -> bool:
    try:
        with urllib.request.urlopen(server.root + server.health, timeout=3) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def require(server: Server) -> Server:
    """The server, or skip the test saying how to start it."""
    if not is_up(server):
        pytest.skip(
            f"{server.name} is not reachable at {server.root}{server.health}; "
            f"start it with: {server.start}"
        )
    return server


@dataclass
class Raw:
    """One raw HTTP exchange: what the server sent, untouched."""

    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return orjson.loads(self.text)


async def _post_all(
    server: Server, bodies: list[dict[str, Any]], key: str | None, concurrency: int
) -> list[Raw]:
    gate = asyncio.Semaphore(concurrency)
    url = server.base_url + "/chat/completions"
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout, headers=server.headers(key)) as session:

        async def one(body: dict[str, Any]) -> Raw:
            async with gate, session.post(url, json=body) as resp:
                text = await resp.text()
                headers = {k.lower(): v for k, v in resp.headers.items()}
                return Raw(resp.status, headers, text)

        return await asyncio.gather(*(one(b) for b in bodies))


def post(
    server: Server, bodies: list[dict[str, Any]], *, key: str | None = None, concurrency: int = 8
) -> list[Raw]:
    """Send each body to ``/v1/chat/completions`` with aiohttp; the raw answers, in order."""
    return asyncio.run(_post_all(server, bodies, key, concurrency))


_METRIC = re.compile(r"^(llamacpp:[a-z_]+)(?:\{[^}]*\})?\s+([0-9.eE+-]+)$", re.MULTILINE)


def llama_metrics(server: Server) -> dict[str, float]:
    """llama-server's ``/metrics`` (it runs with ``--metrics``) as name → value."""
    with urllib.request.urlopen(server.root + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {name: float(value) for name, value in _METRIC.findall(text)}


def prompt_tokens_served(server: Server) -> float:
    """Prompt tokens llama-server has taken in so far, evaluated or from its cache."""
    m = llama_metrics(server)
    return m["llamacpp:prompt_tokens_total"] + m["llamacpp:prompt_tokens_cached_total"]


def prompt_tokens_of(server: Server, body: dict[str, Any]) -> int:
    """How many prompt tokens the server counts for ``body`` (asked with one raw request)."""
    (answer,) = post(server, [{**body, "stream": False, "max_tokens": 1}])
    return int(answer.json()["usage"]["prompt_tokens"])


class ServedRequests:
    """Counts the requests llama-server handled while in the block, from ``/metrics``.

    llama-server counts no requests, but every request it handles adds its prompt tokens to
    ``prompt_tokens_total + prompt_tokens_cached_total``; with one prompt length for every
    row, the growth divided by that length is the number of requests handled. A request
    that died on a closed connection before reaching the server is not counted.
    """

    def __init__(self, server: Server, body: dict[str, Any]) -> None:
        self.server = server
        self.per_request = prompt_tokens_of(server, body)
        self.count = 0.0

    def __enter__(self) -> ServedRequests:
        self.before = prompt_tokens_served(self.server)
        return self

    def __exit__(self, *exc: object) -> None:
        self.count = (prompt_tokens_served(self.server) - self.before) / self.per_request
