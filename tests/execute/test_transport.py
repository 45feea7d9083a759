"""The real aiohttp transport against tiny servers on 127.0.0.1 that misbehave on purpose."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from batchchat.errors import (
    ConnectTimeout,
    DeadlineExceeded,
    FirstByteTimeout,
    IdleTimeout,
    NetworkError,
)
from batchchat.execute.transport import AiohttpTransport, HTTPRequest, MockTransport
from batchchat.spec import EndpointSpec

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_server(script: Script) -> AsyncIterator[str]:
    """A server whose every connection runs ``script`` after reading the request head."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            await reader.readexactly(length)
            await script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1/chat/completions"
    finally:
        server.close()
        await server.wait_closed()


def _head(status: str = "200 OK", length: int | None = None, **headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _transport(**endpoint: Any) -> AiohttpTransport:
    return AiohttpTransport(EndpointSpec(**endpoint), max_connections=4)


def _post(url: str) -> HTTPRequest:
    return HTTPRequest(url, b'{"model": "m"}', {"content-type": "application/json"})


async def _send(url: str, **endpoint: Any) -> Any:
    transport = _transport(**endpoint)
    try:
        return await transport.send(_post(url))
    finally:
        await transport.aclose()


# -- the happy path -----------------------------------------------------------------------------


async def answers_json(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    body = b'{"ok": true}'
    writer.write(_head(length=len(body), Content_Type="application/json", X_Request_Id="r1") + body)
    await writer.drain()


async def test_a_response_comes_back_whole_with_lower_case_headers() -> None:
    async with raw_server(answers_json) as url:
        response = await _send(url)
    assert response.status == 200
    assert response.body == b'{"ok": true}'
    assert response.headers["x-request-id"] == "r1"
    assert response.headers["content-type"] == "application/json"


async def answers_429(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    body = b'{"error": {"message": "slow down"}}'
    writer.write(_head("429 Too Many Requests", len(body), Retry_After="1") + body)
    await writer.drain()


async def test_an_error_status_is_a_response_not_an_exception() -> None:
    async with raw_server(answers_429) as url:
        response = await _send(url)
    assert response.status == 429 and response.headers["retry-after"] == "1"


async def test_one_session_serves_many_requests_and_reopens_after_close() -> None:
    transport = _transport()
    async with raw_server(answers_json) as url:
        first = await asyncio.gather(*(transport.send(_post(url)) for _ in range(10)))
        await transport.aclose()
        again = await transport.send(_post(url))
        await transport.aclose()
    assert [r.status for r in first] == [200] * 10 and again.status == 200


def test_the_transport_can_be_built_outside_a_running_loop() -> None:
    transport = _transport()  # the session is opened lazily, inside the loop
    assert transport._session is None


# -- failures -----------------------------------------------------------------------------------


async def closes_without_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    return None


async def test_a_dropped_connection_is_a_network_error() -> None:
    async with raw_server(closes_without_answer) as url:
        with pytest.raises(NetworkError):
            await _send(url)


async def body_shorter_than_its_length(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    writer.write(_head(length=100) + b'{"choices": [')
    await writer.drain()


async def test_a_body_shorter_than_its_content_length_is_a_network_error() -> None:
    async with raw_server(body_shorter_than_its_length) as url:
        with pytest.raises(NetworkError, match="mid-body"):
            await _send(url)


async def test_a_refused_connection_is_a_network_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(NetworkError):
            await _send(f"http://127.0.0.1:{port}/v1/chat/completions")


async def test_a_connection_that_is_never_accepted_is_a_connect_timeout() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(0)
        port = sock.getsockname()[1]
        # fill the accept queue so the kernel ignores the next handshake
        fillers = [_connect_without_waiting(port) for _ in range(3)]
        try:
            with pytest.raises(ConnectTimeout):
                await _send(f"http://127.0.0.1:{port}/x", connect_timeout_s=0.2)
        finally:
            for filler in fillers:
                filler.close()


def _connect_without_waiting(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setblocking(False)
    sock.connect_ex(("127.0.0.1", port))
    return sock


async def silent_before_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(5)


async def test_no_headers_in_time_is_a_first_byte_timeout() -> None:
    async with raw_server(silent_before_headers) as url:
        with pytest.raises(FirstByteTimeout):
            await _send(url, first_byte_timeout_s=0.1, idle_timeout_s=1.0)


async def test_without_first_byte_timeout_the_deadline_still_bounds_the_wait() -> None:
    async with raw_server(silent_before_headers) as url:
        with pytest.raises(DeadlineExceeded):
            await _send(url, timeout_s=0.2, idle_timeout_s=0.05)  # idle does not apply yet


async def stalls_mid_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(_head(Transfer_Encoding="chunked") + b"5\r\ndata:\r\n")
    await writer.drain()
    await asyncio.sleep(5)


async def test_silence_mid_body_is_an_idle_timeout() -> None:
    async with raw_server(stalls_mid_body) as url:
        with pytest.raises(IdleTimeout):
            await _send(url, idle_timeout_s=0.1)


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def keeps_alive_then_answers(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    writer.write(_head(Transfer_Encoding="chunked", Content_Type="text/event-stream"))
    # 0.6 s in all, each silence 0.06 s: longer than an idle timeout of 0.4 s in all, and
    # far from it each time (a loaded machine must not make a gap look like a stall)
    for _ in range(10):
        writer.write(_chunk(b": keep-alive\n\n"))
        await writer.drain()
        await asyncio.sleep(0.06)
    writer.write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
    await writer.drain()


async def test_keep_alive_comments_reset_the_idle_timer() -> None:
    async with raw_server(keeps_alive_then_answers) as url:
        response = await _send(url, idle_timeout_s=0.4, first_byte_timeout_s=0.4)
    assert response.body.endswith(b"data: [DONE]\n\n")


async def test_a_trickling_body_is_stopped_by_the_total_deadline() -> None:
    async with raw_server(keeps_alive_then_answers) as url:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(DeadlineExceeded):
            await _send(url, idle_timeout_s=0.4, timeout_s=0.1)
        assert loop.time() - started < 0.5


async def test_mock_transport_accepts_sync_and_async_handlers() -> None:
    from batchchat.execute.transport import HTTPResponse

    async def async_handler(request: HTTPRequest) -> HTTPResponse:
        return HTTPResponse(201, {}, b"a")

    assert (
        await MockTransport(lambda r: HTTPResponse(200, {}, b"s")).send(_post("u"))
    ).body == b"s"
    assert (await MockTransport(async_handler).send(_post("u"))).status == 201
