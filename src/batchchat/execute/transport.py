"""The transport seam: one method that sends one HTTP request and returns its response.

The executor talks only to a :class:`Transport`. :class:`MockTransport` turns a
plain function into a transport for unit tests (a fake network in a few lines,
like httpx's); the real aiohttp transport lives below it and is the only code
in batchchat that imports aiohttp's client. Library exceptions are converted
to batchchat's error types at exactly this boundary.
"""

from __future__ import annotations

import asyncio
import inspect
import weakref
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp

if TYPE_CHECKING:
    from aiohttp.connector import Connection
    from aiohttp.tracing import Trace

from batchchat.errors import (
    ConnectError,
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
    """A POST of a JSON body to ``url`` (the Batch API also GETs, DELETEs and uploads)."""

    url: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    #: True when the body asks for ``stream: true`` (SSE response expected)
    stream: bool = False
    method: str = "POST"


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


class _Attempt:
    """What the connector and aiohttp's trace hooks tell about one try of a request."""

    __slots__ = ("first_byte", "reused")

    def __init__(self) -> None:
        #: the connection came out of the pool (it may have been closed by the server since)
        self.reused = False
        #: the first-byte deadline, started once the request is on the wire
        self.first_byte: asyncio.Timeout | None = None


#: the attempt being sent by the current task: the connector marks it when it hands out a
#: pooled connection (``connect`` runs in the task that sends, inside ``session.request``)
_ATTEMPT: ContextVar[_Attempt | None] = ContextVar("batchchat_attempt", default=None)


class _Connector(aiohttp.TCPConnector):
    """A TCP connector that tells the attempt whether its connection was used before.

    This replaces a trace hook on connection reuse: with any trace config, aiohttp makes
    and sends a trace event at each step of every request, ~14 µs a request (10 % of the
    whole round trip on loopback); this is one set lookup."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._used: weakref.WeakSet[object] = weakref.WeakSet()

    async def connect(
        self,
        req: aiohttp.ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 -- aiohttp's signature
    ) -> Connection:
        connection = await super().connect(req, traces, timeout)
        protocol, attempt = connection.protocol, _ATTEMPT.get()
        if protocol is None:
            return connection
        reused = protocol in self._used
        if not reused:
            self._used.add(protocol)
        if attempt is not None:
            attempt.reused = reused
        return connection


class AiohttpTransport:
    """The real network: one aiohttp session per run, opened lazily inside the running loop.

    Timeouts of one attempt: ``connect_timeout_s`` for the TCP/TLS handshake,
    ``first_byte_timeout_s`` from the request sent to the response headers,
    ``idle_timeout_s`` between two body reads (stream keep-alive comments count as bytes),
    and ``timeout_s`` for the whole attempt. Unset ones are bounded by ``timeout_s`` alone,
    so an attempt never hangs. An attempt that ends early closes its connection, so a
    stalled one never holds a socket past its deadline.

    A pooled connection the server closed since (llama-server closes after a stream while
    saying keep-alive) fails before a byte of the response: the request is sent again at
    once on another connection, as httpx and urllib3 do, and it is not a failed attempt.
    """

    def __init__(self, endpoint: EndpointSpec, *, max_connections: int) -> None:
        self._max_connections = max_connections
        self._connect_s = endpoint.connect_timeout_s
        self._first_byte_s = endpoint.first_byte_timeout_s
        self._idle_s = endpoint.idle_timeout_s
        self._total_s = endpoint.timeout_s
        #: the run's session; None until the first request, and again after aclose()
        self._session: aiohttp.ClientSession | None = None
        #: requests sent again because their pooled connection was dead (not attempts)
        self.stale_retries = 0

    def _open(self) -> aiohttp.ClientSession:
        connector = _Connector(
            limit=self._max_connections,
            limit_per_host=0,
            ttl_dns_cache=300,
            keepalive_timeout=60,
        )
        tracing: list[aiohttp.TraceConfig] = []
        if self._first_byte_s is not None:  # the hook costs every request: only when asked
            first_byte = aiohttp.TraceConfig()
            first_byte.on_request_headers_sent.append(self._on_request_sent)
            tracing.append(first_byte)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_s),
            cookie_jar=aiohttp.DummyCookieJar(),  # an API client keeps no cookies: less work
            trust_env=False,
            trace_configs=tracing,
        )
        return self._session

    async def send(self, request: HTTPRequest) -> HTTPResponse:
        session = self._session or self._open()
        # every pooled connection may be dead: one more try than there can be of them
        for _ in range(self._max_connections + 1):
            attempt = _Attempt()
            try:
                async with asyncio.timeout(self._total_s):
                    return await self._send_once(session, request, attempt)
            except _StaleConnection:
                self.stale_retries += 1
            except TimeoutError:
                raise DeadlineExceeded(
                    f"the attempt ran past its {self._total_s:g}s deadline"
                ) from None
        raise NetworkError("every pooled connection was closed by the server")

    async def _send_once(
        self, session: aiohttp.ClientSession, request: HTTPRequest, attempt: _Attempt
    ) -> HTTPResponse:
        _ATTEMPT.set(attempt)  # each attempt sets its own: nothing to reset
        try:
            response = await self._response_headers(session, request, attempt)
        except Exception as exc:
            if attempt.first_byte is not None and attempt.first_byte.expired():
                raise FirstByteTimeout(
                    f"no response headers within {self._first_byte_s:g}s"
                ) from None
            if attempt.reused and _is_disconnect(exc):
                raise _StaleConnection from None
            raise self._convert(exc) from None
        try:
            body = await self._read_body(response)
            headers = {name.lower(): value for name, value in response.headers.items()}
            return HTTPResponse(response.status, headers, body)
        except IdleTimeout:
            response.close()  # a half-read connection is never reused
            raise
        except Exception as exc:
            response.close()
            raise self._convert(exc, got_headers=True) from None
        except BaseException:
            response.close()  # cancelled (the total deadline): the connection is not reused
            raise
        finally:
            response.release()

    async def _response_headers(
        self, session: aiohttp.ClientSession, request: HTTPRequest, attempt: _Attempt
    ) -> aiohttp.ClientResponse:
        """Sends the request and waits for the response's headers (its first bytes)."""
        if self._first_byte_s is None:
            return await _request(session, request)
        async with asyncio.timeout(None) as first_byte:
            attempt.first_byte = first_byte  # started by the trace hook once the request is sent
            return await _request(session, request, attempt)

    async def _read_body(self, response: aiohttp.ClientResponse) -> bytes:
        """The whole body; with an idle timeout, no silence longer than it between reads."""
        if self._idle_s is None:
            return await response.read()
        loop = asyncio.get_running_loop()
        chunks: list[bytes] = []
        try:
            async with asyncio.timeout(None) as idle:
                while chunk := await _next_chunk(response, idle, loop.time() + self._idle_s):
                    chunks.append(chunk)
        except TimeoutError:
            if idle.expired():
                raise IdleTimeout(f"the response stalled for {self._idle_s:g}s") from None
            raise
        return b"".join(chunks)

    async def _on_request_sent(
        self,
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestHeadersSentParams,
    ) -> None:
        """The request is on the wire: its first-byte deadline starts now."""
        attempt = context.trace_request_ctx
        if isinstance(attempt, _Attempt) and attempt.first_byte is not None:
            assert self._first_byte_s is not None
            attempt.first_byte.reschedule(asyncio.get_running_loop().time() + self._first_byte_s)

    def _convert(self, exc: Exception, *, got_headers: bool = False) -> TransportError:
        """The batchchat error for an aiohttp/asyncio exception."""
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return ConnectTimeout(f"no connection within {self._connect_s:g}s")
        if isinstance(exc, aiohttp.ClientConnectorError):
            return ConnectError(f"cannot connect to {exc.host}:{exc.port}: {exc.os_error}")
        if isinstance(exc, aiohttp.ClientPayloadError):
            return NetworkError(f"the connection dropped mid-body: {exc}")
        if isinstance(exc, aiohttp.ClientError | OSError):
            where = "mid-body" if got_headers else "before the response"
            return NetworkError(f"{type(exc).__name__} {where}: {exc}")
        return NetworkError(f"{type(exc).__name__}: {exc}")

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


class _StaleConnection(Exception):
    """A pooled connection turned out to be closed before a byte of the response arrived."""


def _request(
    session: aiohttp.ClientSession,
    request: HTTPRequest,
    trace_request_ctx: _Attempt | None = None,
) -> Awaitable[aiohttp.ClientResponse]:
    return session.request(
        request.method,
        request.url,
        data=request.body,
        headers=request.headers,
        allow_redirects=False,
        trace_request_ctx=trace_request_ctx,
    )


async def _next_chunk(
    response: aiohttp.ClientResponse, idle: asyncio.Timeout, deadline: float
) -> bytes:
    idle.reschedule(deadline)
    return await response.content.readany()


def _is_disconnect(exc: BaseException) -> bool:
    """The server closed or reset the connection (not a timeout, not a refusal)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return False
    return isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError)
