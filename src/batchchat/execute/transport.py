"""The transport seam: one method that sends one HTTP request and returns its response.

The executor talks only to a :class:`Transport`. :class:`MockTransport` turns a
plain function into a transport for unit tests (a fake network in a few lines,
like httpx's); the real aiohttp transport lives below it and is the only code
in batchchat that imports aiohttp's client. Library exceptions are converted
to batchchat's error types at exactly this boundary.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp

from batchchat.errors import (
    ConnectTimeout,
    DeadlineExceeded,
    FirstByteTimeout,
    IdleTimeout,
    NetworkError,
    TransportError,
)
from batchchat.spec import EndpointSpec


@dataclass(frozen=True, slots=True)
class HTTPRequest:
    """A POST of a JSON body to ``url``."""

    url: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    #: True when the body asks for ``stream: true`` (SSE response expected)
    stream: bool = False


@dataclass(frozen=True, slots=True)
class HTTPResponse:
    """A whole response: status, headers (lower-case names) and the complete body bytes.

    For streams the body is the raw SSE text, read to its end under the idle timeout.
    """

    status: int
    headers: Mapping[str, str]
    body: bytes


class Transport(Protocol):
    """Sends one request; raises a :class:`batchchat.errors.TransportError` when nothing usable
    came back. An HTTP error status is *not* an exception here: it is a response."""

    async def send(self, request: HTTPRequest) -> HTTPResponse: ...

    async def aclose(self) -> None: ...


Handler = Callable[[HTTPRequest], HTTPResponse | Awaitable[HTTPResponse]]


class MockTransport:
    """A transport whose network is a function from request to response (sync or async)."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler

    async def send(self, request: HTTPRequest) -> HTTPResponse:
        response = self._handler(request)
        if inspect.isawaitable(response):
            return await response
        return response

    async def aclose(self) -> None:
        return None


# -- the real network ---------------------------------------------------------------------------


class AiohttpTransport:
    """The real network: one aiohttp session per run, opened lazily inside the running loop.

    Timeouts of one attempt: ``connect_timeout_s`` for the TCP/TLS handshake,
    ``first_byte_timeout_s`` until the response headers, ``idle_timeout_s`` between two
    body reads (stream keep-alive comments count as bytes), and ``timeout_s`` for the whole
    attempt. Unset ones are bounded by ``timeout_s`` alone, so an attempt never hangs.
    """

    def __init__(self, endpoint: EndpointSpec, *, max_connections: int) -> None:
        self._max_connections = max_connections
        self._connect_s = endpoint.connect_timeout_s
        self._first_byte_s = endpoint.first_byte_timeout_s
        self._idle_s = endpoint.idle_timeout_s
        self._total_s = endpoint.timeout_s
        #: the run's session; None until the first request, and again after aclose()
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=0,
            ttl_dns_cache=300,
            keepalive_timeout=60,
        )
        timeout = aiohttp.ClientTimeout(
            total=self._total_s, sock_connect=self._connect_s, sock_read=self._first_byte_s
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            cookie_jar=aiohttp.DummyCookieJar(),  # an API client keeps no cookies: less work
            trust_env=False,
        )
        return self._session

    async def send(self, request: HTTPRequest) -> HTTPResponse:
        session = self._session or self._open()
        got_headers = False
        try:
            async with session.post(
                request.url, data=request.body, headers=request.headers, allow_redirects=False
            ) as response:
                got_headers = True
                if self._idle_s != self._first_byte_s:
                    self._switch_to_idle_timeout(response)
                body = await response.read()
                headers = {name.lower(): value for name, value in response.headers.items()}
                return HTTPResponse(response.status, headers, body)
        except Exception as exc:
            error = self._convert(exc, got_headers)
            if error is None:
                raise
            raise error from None

    def _switch_to_idle_timeout(self, response: aiohttp.ClientResponse) -> None:
        """From here on, aiohttp's read timeout measures silence between body bytes."""
        connection = response.connection
        # once the body is complete aiohttp no longer drops its read timer: leave it alone
        if connection is None or connection.protocol is None or response.content.is_eof():
            return
        connection.protocol.read_timeout = self._idle_s
        connection.protocol.start_timeout()

    def _convert(self, exc: Exception, got_headers: bool) -> TransportError | None:
        """The batchchat error for an aiohttp/asyncio exception (None: not a network problem)."""
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return ConnectTimeout(f"no connection within {self._connect_s:g}s")
        if isinstance(exc, aiohttp.SocketTimeoutError):
            if got_headers:
                return IdleTimeout(f"the response stalled for {self._idle_s}s")
            return FirstByteTimeout(f"no response headers within {self._first_byte_s}s")
        if isinstance(exc, TimeoutError):
            return DeadlineExceeded(f"the attempt ran past its {self._total_s:g}s deadline")
        if isinstance(exc, aiohttp.ClientPayloadError):
            return NetworkError(f"the connection dropped mid-body: {exc}")
        if isinstance(exc, aiohttp.ClientError | OSError):
            return NetworkError(f"{type(exc).__name__}: {exc}")
        return None

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
