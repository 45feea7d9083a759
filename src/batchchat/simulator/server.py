"""The simulator's aiohttp server: routes, auth, admission, faults, and writing the answer.

Each chat request goes through one chain: count it → check the key → parse
and validate → admit against RPM/TPM → draw a fault → build the completion →
wait the latency → send it (whole, or as a paced stream). The answer itself
is computed by the pure modules beside this one.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import os
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web

from batchchat.planning.tokens import REPLY_PRIMING_TOKENS
from batchchat.simulator import replies, stream
from batchchat.simulator.completion import build_completion, response_body
from batchchat.simulator.faults import FaultPlan, LatencyModel
from batchchat.simulator.ratelimit import Admission, RateLimiter, retry_headers
from batchchat.simulator.stats import (
    PrefixCache,
    Stats,
    encode_messages,
    message_tokens,
    request_key,
)
from batchchat.simulator.validate import InvalidRequest, SimRequest, validate_request
from batchchat.spec import SimulatorSpec

#: completion tokens charged per choice against TPM at admission when a request sets no
#: max_tokens; the same as the planner's DEFAULT_MAX_OUTPUT_TOKENS, so estimates agree
DEFAULT_CHARGED_COMPLETION_TOKENS = 1024
#: models listed by GET /v1/models besides those already asked for
LISTED_MODELS = ("sim-small", "gpt-4o-mini", "o3-mini", "deepseek-reasoner")
_JSON = "application/json"

Sleep = Callable[[float], Awaitable[None]]


class SimulatorServer:
    """A local OpenAI-compatible Chat Completions server, started in-process.

    ``clock`` (monotonic seconds) drives the rate-limit windows and ``sleep``
    every wait (latency, streaming pace, stalls), so tests control time.

    >>> async with SimulatorServer(SimulatorSpec(rpm=60)) as sim:
    ...     sim.base_url  # 'http://127.0.0.1:41234/v1'
    """

    def __init__(
        self,
        config: SimulatorSpec | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep | None = None,
    ) -> None:
        self.config = config or SimulatorSpec()
        self._clock = clock
        self._custom_sleep = sleep
        self._limiter = RateLimiter(self.config.rpm, self.config.tpm)
        self._faults = FaultPlan(self.config.faults)
        self._latency = LatencyModel(self.config.latency, self.config.faults.seed)
        self._cache = PrefixCache()
        self._stats = Stats()
        self._models: set[str] = set(LISTED_MODELS)  # every model asked for, for /v1/models
        self._runner: web.AppRunner | None = None
        self._closed: asyncio.Future[None] | None = None  # resolved by stop(): ends every wait
        self._base_url: str | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0: an ephemeral port); return the base URL (``…/v1``)."""
        if self._runner is not None:
            raise RuntimeError("the simulator is already running")
        self._closed = asyncio.get_running_loop().create_future()
        runner = web.AppRunner(
            self._app(), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        self._runner = runner
        bound = runner.addresses[0][1]
        if self.config.prefill:
            self._limiter.prefill(self._clock())
        shown = f"[{host}]" if ":" in host else host
        self._base_url = f"http://{shown}:{bound}/v1"
        return self._base_url

    async def stop(self) -> None:
        """Stop listening, end pending waits (stalls, slow streams) and close connections."""
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> SimulatorServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("the simulator is not started: await start() first")
        return self._base_url

    def stats(self) -> dict[str, Any]:
        """The counters of ``GET /stats``."""
        return self._stats.snapshot()

    def reset_stats(self) -> None:
        """Zero the counters and forget cached prompt prefixes (``POST /stats/reset``)."""
        in_flight = self._stats.in_flight
        self._stats = Stats()
        self._stats.in_flight = in_flight
        self._cache.clear()

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)  # prompts may carry images
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._list_models)
        app.router.add_get("/models", self._list_models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/stats", self._get_stats)
        app.router.add_post("/stats/reset", self._reset_stats)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    # -- small routes ---------------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    async def _get_stats(self, request: web.Request) -> web.Response:
        return _json(200, self.stats())

    async def _reset_stats(self, request: web.Request) -> web.Response:
        self.reset_stats()
        return _json(200, {"status": "reset"})

    async def _list_models(self, request: web.Request) -> web.Response:
        if not self._is_authorized(request):
            return self._unauthorized()
        created = 1_700_000_000
        data = [
            {"id": model, "object": "model", "created": created, "owned_by": "batchchat-simulator"}
            for model in sorted(self._models)
        ]
        return _json(200, {"object": "list", "data": data})

    async def _not_found(self, request: web.Request) -> web.Response:
        return _json(404, replies.not_found_body(request.method, request.path))

    # -- chat completions -----------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        stats = self._stats
        stats.requests += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            response = await self._answer(request)
        finally:
            stats.in_flight -= 1
        if not response.get("dropped"):  # a status line was (or will be) sent
            self._stats.by_status[response.status] += 1
        return response

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        if not self._is_authorized(request):
            return self._unauthorized()
        try:
            sim = validate_request(orjson.loads(await request.read()))
        except orjson.JSONDecodeError:
            return self._invalid(replies.unparsable_body())
        except InvalidRequest as exc:
            return self._invalid(replies.invalid_body(exc))
        self._models.add(sim.model)
        tokens = message_tokens(sim.messages)
        prompt_tokens = REPLY_PRIMING_TOKENS + sum(tokens)
        charge = prompt_tokens + (sim.max_tokens or DEFAULT_CHARGED_COMPLETION_TOKENS) * sim.n
        now = self._clock()
        admission = self._limiter.admit(charge, now)
        if not admission.admitted:
            return self._rate_limited(sim, admission)
        encoded = encode_messages(sim.messages)
        key = request_key(sim.model, sim.seed, encoded)
        fault = self._draw_fault(key, sim.stream)
        if fault in replies.FAULT_REPLIES:
            return self._fault_response(fault)
        if fault in {"drop", "stall"}:
            if fault == "stall":
                await self._stall(self.config.faults.stall_s)
            return _drop(request)
        cached = self._cache.cached_tokens(sim.model, encoded, tokens)
        completion = build_completion(
            sim, prompt_tokens, cached, id=_completion_id(), created=int(time.time())
        )
        headers = self._limiter.headers(self._clock())
        headers["x-request-id"] = "req_" + completion.id.removeprefix("chatcmpl-")
        if sim.stream:
            frames = stream.stream_frames(completion, include_usage=sim.include_usage)
            response, complete = await self._send_stream(request, frames, headers, fault)
        else:
            await self._sleep(self._latency.sample())
            payload = orjson.dumps(response_body(completion))
            if fault == "truncate":
                return await _send_truncated(request, payload, headers)
            response = web.Response(body=payload, content_type=_JSON, headers=headers)
            complete = True
        if fault is None and complete:
            self._record_answer(key, completion.usage)
        return response

    def _draw_fault(self, key: str, is_stream: bool) -> str | None:
        arrival = self._stats.arrivals[key]
        self._stats.arrivals[key] = arrival + 1
        fault = self._faults.pick(key, arrival, is_stream)
        if fault is not None:
            self._stats.faults[fault] += 1
        return fault

    def _record_answer(self, key: str, usage: dict[str, Any]) -> None:
        self._stats.answers[key] += 1
        self._stats.prompt_tokens += usage["prompt_tokens"]
        self._stats.completion_tokens += usage["completion_tokens"]

    async def _send_stream(
        self,
        request: web.Request,
        frames: list[stream.Frame],
        headers: dict[str, str],
        fault: str | None,
    ) -> tuple[web.StreamResponse, bool]:
        """Write the events, paced by ``tokens_per_s`` with keep-alives; faults cut it short."""
        response = web.StreamResponse(headers=headers)
        response.content_type = "text/event-stream"
        response.headers["cache-control"] = "no-cache"
        await response.prepare(request)
        if fault == "stream_error":
            error = stream.error_event(replies.SERVER_ERROR)
            frames = [*frames[: len(frames) // 2], (error, 0)]
        elif fault == "truncate":
            frames = frames[: len(frames) // 2]
        try:
            await self._pause(response, self._latency.sample())
            rate = self.config.tokens_per_s
            if rate <= 0:
                await response.write(b"".join(frame for frame, _ in frames))
            else:
                for frame, tokens in frames:
                    await self._pause(response, tokens / rate)
                    await response.write(frame)
            if fault == "truncate":
                if request.transport is not None:
                    request.transport.close()
                return response, False
            await response.write_eof()
        except ConnectionError:  # the client went away: not an answer
            return response, False
        return response, True

    async def _pause(self, response: web.StreamResponse, seconds: float) -> None:
        """Wait ``seconds``, sending a ``: keep-alive`` comment every ``keep_alive_s``."""
        every = self.config.keep_alive_s
        while seconds > every:
            await self._sleep(every)
            seconds -= every
            await response.write(stream.KEEP_ALIVE)
        await self._sleep(seconds)

    async def _sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if self._custom_sleep is not None:
            await self._custom_sleep(seconds)
        else:
            await asyncio.sleep(seconds)

    async def _stall(self, seconds: float) -> None:
        """Wait ``seconds`` or until stop(), whichever comes first."""
        if self._custom_sleep is not None:
            await self._custom_sleep(seconds)
        elif self._closed is not None:
            await asyncio.wait({self._closed}, timeout=seconds)

    # -- error responses ------------------------------------------------------------------------

    def _is_authorized(self, request: web.Request) -> bool:
        expected = self.config.api_key
        if not expected:
            return True
        given = request.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip(), expected)

    def _unauthorized(self) -> web.Response:
        return _json(401, replies.unauthorized_body(), self._limiter.headers(self._clock()))

    def _invalid(self, body: dict[str, Any]) -> web.Response:
        return _json(400, body, self._limiter.headers(self._clock()))

    def _rate_limited(self, sim: SimRequest, admission: Admission) -> web.Response:
        self._stats.rate_limited += 1
        headers = self._limiter.headers(self._clock())
        if not math.isinf(admission.retry_after):  # waiting cannot help a request too large
            headers.update(retry_headers(admission.retry_after))
        return _json(429, replies.rate_limited_body(sim.model, admission), headers)

    def _fault_response(self, fault: str) -> web.Response:
        status, error = replies.FAULT_REPLIES[fault]
        # the injected 429 is the bare kind: no retry-after, no x-ratelimit headers
        headers = {} if fault == "http_429" else self._limiter.headers(self._clock())
        return _json(status, {"error": error}, headers)


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(payload), content_type=_JSON, headers=headers
    )


def _completion_id() -> str:
    return "chatcmpl-sim" + os.urandom(10).hex()


def _drop(request: web.Request) -> web.StreamResponse:
    """Close the connection without a response (aiohttp then skips writing the one returned)."""
    if request.transport is not None:
        request.transport.close()
    response = web.StreamResponse()
    response["dropped"] = True
    return response


async def _send_truncated(
    request: web.Request, payload: bytes, headers: dict[str, str]
) -> web.StreamResponse:
    """Announce the whole body's length, send half of it, and close the connection."""
    response = web.StreamResponse(headers=headers)
    response.content_type = _JSON
    response.content_length = len(payload)
    await response.prepare(request)
    await response.write(payload[: len(payload) // 2])
    if request.transport is not None:
        request.transport.close()
    return response
