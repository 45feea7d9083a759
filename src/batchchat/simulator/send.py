"""Writing an answer to the wire: paced as a stream, trickled, cut short, or not at all.

Every wait goes through a :class:`Pacer`, so tests control time with an injected
``sleep`` and a stopping server ends the long waits (stalls, trickles) at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from aiohttp import web

from batchchat.simulator import stream

Sleep = Callable[[float], Awaitable[None]]
#: bytes a trickled body sends per interval
TRICKLE_BYTES = 1


class Pacer:
    """The waits of the server: plain, with stream keep-alives, and cut short by stop()."""

    def __init__(self, sleep: Sleep | None, keep_alive_s: float) -> None:
        self._custom_sleep = sleep
        self._keep_alive_s = keep_alive_s
        self._stopped: asyncio.Event | None = None  # set by stop(): ends the long waits

    def start(self) -> None:
        self._stopped = asyncio.Event()

    def stop(self) -> None:
        if self._stopped is not None:
            self._stopped.set()

    @property
    def is_stopped(self) -> bool:
        return self._stopped is not None and self._stopped.is_set()

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if self._custom_sleep is not None:
            await self._custom_sleep(seconds)
        else:
            await asyncio.sleep(seconds)

    async def wait(self, seconds: float) -> None:
        """Wait ``seconds`` or until stop(), whichever comes first."""
        if self._custom_sleep is not None:
            await self._custom_sleep(seconds)
        elif self._stopped is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), timeout=seconds)

    async def pause(self, response: web.StreamResponse, seconds: float) -> None:
        """Wait ``seconds``, sending a ``: keep-alive`` comment every ``keep_alive_s``."""
        every = self._keep_alive_s
        while seconds > every:
            await self.sleep(every)
            seconds -= every
            await response.write(stream.KEEP_ALIVE)
        await self.sleep(seconds)


async def send_stream(
    request: web.Request,
    frames: list[stream.Frame],
    headers: dict[str, str],
    pacer: Pacer,
    *,
    latency: float,
    tokens_per_s: float,
    cut: bool = False,
) -> tuple[web.StreamResponse, bool]:
    """Write the events after ``latency``, paced by ``tokens_per_s`` (0: at once).

    ``cut``: the frames end early; close the connection instead of ending the body.
    Returns the response and whether the whole stream was sent.
    """
    response = web.StreamResponse(headers=headers)
    response.content_type = stream.CONTENT_TYPE
    response.headers["cache-control"] = "no-cache"
    await response.prepare(request)
    try:
        await pacer.pause(response, latency)
        if tokens_per_s <= 0:
            await response.write(b"".join(frame for frame, _ in frames))
        else:
            for frame, tokens in frames:
                await pacer.pause(response, tokens / tokens_per_s)
                await response.write(frame)
        if cut:
            close(request)
            return response, False
        await response.write_eof()
    except ConnectionError:  # the client went away: not an answer
        return response, False
    return response, True


async def send_trickled(
    request: web.Request,
    body: bytes,
    headers: dict[str, str],
    content_type: str,
    pacer: Pacer,
    interval: float,
) -> tuple[web.StreamResponse, bool]:
    """Send status and headers at once, then :data:`TRICKLE_BYTES` of ``body`` per ``interval``.

    The connection is never idle for longer than ``interval``, so only a client's total
    deadline ends it. A JSON body announces its length; a stream is chunked, as always.
    Returns the response and whether the whole body was sent.
    """
    response = web.StreamResponse(headers=headers)
    response.content_type = content_type
    if content_type != stream.CONTENT_TYPE:
        response.content_length = len(body)
    await response.prepare(request)
    try:
        for start in range(0, len(body), TRICKLE_BYTES):
            if start:
                await pacer.wait(interval)
            if pacer.is_stopped:
                close(request)
                return response, False
            await response.write(body[start : start + TRICKLE_BYTES])
        await response.write_eof()
    except ConnectionError:  # the client gave up: not an answer
        return response, False
    return response, True


async def send_truncated(
    request: web.Request, payload: bytes, headers: dict[str, str], content_type: str
) -> web.StreamResponse:
    """Announce the whole body's length, send half of it, and close the connection."""
    response = web.StreamResponse(headers=headers)
    response.content_type = content_type
    response.content_length = len(payload)
    await response.prepare(request)
    await response.write(payload[: len(payload) // 2])
    close(request)
    return response


class Dropped(web.StreamResponse):
    """What a handler returns for a connection closed without a response (no status sent)."""


def drop(request: web.BaseRequest) -> web.StreamResponse:
    """Close the connection without a response (aiohttp then skips writing the one returned)."""
    close(request)
    return Dropped()


def close(request: web.BaseRequest) -> None:
    if request.transport is not None:
        request.transport.close()
