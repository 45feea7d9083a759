"""A built site served on 127.0.0.1 and driven in headless Chromium over the DevTools protocol.

``--dump-dom`` shows a page as loaded; the site's search runs in a web worker after that, so
checking it means typing into the search box and waiting for results, which needs a live
page: Chromium's remote debugging, spoken with aiohttp's WebSocket client.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.server
import json
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp

from tests._system import chromium


@contextlib.contextmanager
def served(site: Path) -> Iterator[str]:
    """``site`` served over HTTP on a free loopback port (the search worker needs HTTP)."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class Browser:
    """One headless Chromium page: go to a URL, evaluate JavaScript there."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._next_id = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        ask = self._next_id
        await self._socket.send_json({"id": ask, "method": method, "params": params})
        async for message in self._socket:
            data = message.json()
            if data.get("id") == ask:
                assert "error" not in data, data
                result: dict[str, Any] = data["result"]
                return result
        raise AssertionError("Chromium closed the connection")

    async def goto(self, url: str) -> None:
        await self.call("Page.navigate", url=url)
        await self.evaluate(
            "new Promise(done => { const ready = () => document.readyState === 'complete'"
            " && document.querySelector('.md-search__input') ? done(true)"
            " : setTimeout(ready, 50); ready(); })"
        )

    async def evaluate(self, expression: str) -> Any:
        found = await self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        assert "exceptionDetails" not in found, found["exceptionDetails"]
        return found["result"].get("value")

    async def search(self, query: str) -> list[str]:
        """Type ``query`` into the site's search box; the result links, once they show."""
        return list(
            await self.evaluate(
                """(async () => {
                  const box = document.querySelector('.md-search__input');
                  box.focus();
                  box.value = QUERY;
                  box.dispatchEvent(new Event('input', {bubbles: true}));
                  box.dispatchEvent(new KeyboardEvent('keyup', {bubbles: true, key: 'a'}));
                  for (let wait = 0; wait < 100; wait++) {
                    const items = document.querySelectorAll('.md-search-result__item a');
                    if (items.length) return Array.from(items, a => a.getAttribute('href'));
                    await new Promise(done => setTimeout(done, 100));
                  }
                  return [];
                })()""".replace("QUERY", json.dumps(query))
            )
        )


@contextlib.asynccontextmanager
async def browser(profile: Path) -> AsyncIterator[Browser]:
    """A headless Chromium (skips when there is none, unless CI demands it)."""
    process = await asyncio.create_subprocess_exec(
        *[
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        port = await _debugging_port(profile / "DevToolsActivePort", process)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json") as answer:
                targets = await answer.json()
            page = next(target for target in targets if target["type"] == "page")
            async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                yield Browser(ws)
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout=10)
        except TimeoutError:
            process.kill()
            await process.wait()


async def _debugging_port(announced: Path, process: asyncio.subprocess.Process) -> str:
    """The port Chromium writes into its profile once it listens for DevTools."""
    for _ in range(300):
        port = await asyncio.to_thread(_port_in, announced)
        if port:
            return port
        assert process.returncode is None, f"chromium exited with {process.returncode}"
        await asyncio.sleep(0.1)
    raise AssertionError("chromium did not open its DevTools port within 30 s")


def _port_in(announced: Path) -> str | None:
    text = announced.read_text() if announced.is_file() else ""
    return text.split()[0] if text.strip() else None
