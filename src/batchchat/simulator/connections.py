"""The simulator's TCP connections: counted as they open and close, and retired after streams.

Counting hooks the aiohttp server's own ``connection_made`` / ``connection_lost``
callbacks, so it counts sockets: a kept-alive connection that carries many requests
counts once, and a connection a client opened but never used counts too.

Retiring reproduces llama.cpp's server (``close_after_stream``), which closes the
connection right after a streamed response although its headers said keep-alive, so a
client that reuses the pooled connection gets a disconnect before any byte. Closing at
once would make that a race that the client mostly wins (it sees the FIN before it
reuses the connection), so a retired connection stays open for :data:`RETIRED_LINGER_S`
and a request that arrives on it meanwhile is closed without a byte: deterministic.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

#: how long a retired connection stays open, closing any request that arrives on it
RETIRED_LINGER_S = 0.5


class Connections:
    """Open-connection counters, and the connections retired after a stream."""

    def __init__(self) -> None:
        self.open = 0  # TCP connections open now
        self.max_open = 0  # the most open at once since start (or the last reset)
        self._retired: dict[RequestHandler, asyncio.TimerHandle] = {}  # → its pending close
        self._changed = asyncio.Event()  # set (and replaced) whenever a connection closes

    def watch(self, server: web.Server) -> None:
        """Count the connections of ``server`` by wrapping its connection callbacks."""
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler: RequestHandler, transport: asyncio.Transport) -> None:
            self.open += 1
            self.max_open = max(self.max_open, self.open)
            made(handler, transport)

        def connection_lost(handler: RequestHandler, exc: BaseException | None = None) -> None:
            self.open -= 1
            pending = self._retired.pop(handler, None)
            if pending is not None:
                pending.cancel()
            lost(handler, exc)
            self._changed.set()
            self._changed = asyncio.Event()

        # aiohttp has no listener API for these; the runner's server is ours alone
        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]

    async def wait_open(self, at_most: int) -> None:
        """Return once no more than ``at_most`` connections are open."""
        while self.open > at_most:
            await self._changed.wait()

    def retire(self, request: web.BaseRequest) -> None:
        """Close ``request``'s connection shortly; until then, close it on any new request."""
        transport = request.transport
        if transport is None or transport.is_closing() or request.protocol in self._retired:
            return
        loop = asyncio.get_running_loop()
        self._retired[request.protocol] = loop.call_later(RETIRED_LINGER_S, transport.close)

    def is_retired(self, request: web.BaseRequest) -> bool:
        return request.protocol in self._retired

    def reset_peak(self) -> None:
        self.max_open = self.open
