"""The simulator's aiohttp server: routes, auth, admission, faults, and writing the answer.

Each chat request goes through one chain: count it → check the key → parse
and validate → fit the context → admit against RPM/TPM → draw a fault → build
the completion → wait the latency → send it (whole, or as a paced stream).
The answer itself is computed by the pure modules beside this one; the bytes
are written by :mod:`send`.
"""

from __future__ import annotations

import dataclasses
import functools
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from batchchat.planning.tokens import REPLY_PRIMING_TOKENS
from batchchat.simulator import context, replies, send, stream
from batchchat.simulator.batchapi import BatchAPI
from batchchat.simulator.completion import (
    Completion,
    build_completion,
    completion_id,
    force_first_tokens,
    response_body,
)
from batchchat.simulator.connections import Connections
from batchchat.simulator.faults import ANSWER_FAULTS, ANSWERING_FAULTS, FaultPlan, LatencyModel
from batchchat.simulator.gateway import GatewayLimiter
from batchchat.simulator.malformed import BODY_FAULTS, malform, malform_frames
from batchchat.simulator.ratelimit import Admission, Limiter, RateLimiter
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

    ``clock`` (monotonic seconds) drives the sliding rate-limit windows and the Batch API's
    time, ``wall_clock`` (epoch seconds) the gateway style's calendar minutes, and ``sleep``
    every wait (latency, streaming pace, stalls, trickles), so tests control time.

    >>> async with SimulatorServer(SimulatorSpec(rpm=60)) as sim:
    ...     sim.base_url  # 'http://127.0.0.1:41234/v1'
    """

    def __init__(
        self,
        config: SimulatorSpec | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Sleep | None = None,
    ) -> None:
        self.config = config or SimulatorSpec()
        config = self.config
        self._limiter: Limiter
        if config.rate_limit_style == "gateway":
            self._limiter, self._limit_clock = (
                GatewayLimiter(config.rpm, config.tpm, window_s=config.gateway_window_s),
                wall_clock,
            )
        else:
            self._limiter, self._limit_clock = RateLimiter(config.rpm, config.tpm), clock
        self._faults = FaultPlan(config.faults)
        self._latency = LatencyModel(config.latency, config.faults.seed)
        self._pacer = send.Pacer(sleep, config.keep_alive_s)
        self._cache = PrefixCache()
        self._stats = Stats()
        self._connections = Connections()
        self._models: set[str] = set(LISTED_MODELS)  # every model asked for, for /v1/models
        line_fault = functools.partial(self._draw_fault, line=True)
        self._batch_api = BatchAPI(
            config.batch, clock, self._cache, self._record_answer, self._is_authorized, line_fault
        )
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0: an ephemeral port); return the base URL (``…/v1``)."""
        if self._runner is not None:
            raise RuntimeError("the simulator is already running")
        self._pacer.start()
        runner = web.AppRunner(
            self._app(), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        assert runner.server is not None  # set up above
        self._connections.watch(runner.server)
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        self._runner = runner
        bound = runner.addresses[0][1]
        if self.config.prefill:
            self._limiter.prefill(self._limit_clock())
        shown = f"[{host}]" if ":" in host else host
        self._base_url = f"http://{shown}:{bound}/v1"
        return self._base_url

    async def stop(self) -> None:
        """Stop listening, end pending waits (stalls, trickles) and close connections."""
        self._pacer.stop()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> SimulatorServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("the simulator is not started: await start() first")
        return self._base_url

    def stats(self) -> dict[str, Any]:
        """The counters of ``GET /stats``."""
        connections = self._connections
        counters = self._stats.snapshot(connections.open, connections.max_open)
        return {**counters, "batch": self._batch_api.stats()}

    async def wait_connections(self, at_most: int = 0) -> None:
        """Return once no more than ``at_most`` TCP connections are open (wrap in a timeout).

        A test that a client closes the connections it gave up on can await this.
        """
        await self._connections.wait_open(at_most)

    def reset_stats(self) -> None:
        """Zero the counters and forget cached prompt prefixes (``POST /stats/reset``)."""
        in_flight = self._stats.in_flight
        self._stats = Stats()
        self._stats.in_flight = in_flight
        self._connections.reset_peak()
        self._cache.clear()

    def _app(self) -> web.Application:
        # prompts may carry images; Batch API input files are up to max_bytes
        most = max(64 * 1024 * 1024, self.config.batch.max_bytes + (1 << 20))
        app = web.Application(client_max_size=most, middlewares=[self._close_retired])
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._list_models)
        app.router.add_get("/models", self._list_models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/stats", self._get_stats)
        app.router.add_post("/stats/reset", self._reset_stats)
        app.router.add_routes(self._batch_api.routes())
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    @web.middleware
    async def _close_retired(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """A request on a connection retired after a stream is closed without a byte."""
        if self._connections.is_retired(request):
            self._stats.closed_on_reuse += 1
            return send.drop(request)
        return await handler(request)

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
            return self._unauthorized(request)
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
        if not isinstance(response, send.Dropped):  # a status line was (or will be) sent
            self._stats.by_status[response.status] += 1
        return response

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        if not self._is_authorized(request):
            return self._unauthorized(request)
        try:
            sim = validate_request(orjson.loads(await request.read()))
        except orjson.JSONDecodeError:
            return self._invalid(replies.unparsable_body())
        except InvalidRequest as exc:
            return self._invalid(replies.invalid_body(exc))
        self._models.add(sim.model)
        tokens = message_tokens(sim.messages)
        prompt_tokens = REPLY_PRIMING_TOKENS + sum(tokens)
        if self.config.context_tokens is not None:
            style, limit = self.config.error_style, self.config.context_tokens
            budget, overflow = context.fit(style, limit, prompt_tokens, sim.max_tokens)
            if overflow is not None:
                return self._context_overflow(overflow)
            sim = dataclasses.replace(sim, max_tokens=budget)
        charge = prompt_tokens + (sim.max_tokens or DEFAULT_CHARGED_COMPLETION_TOKENS) * sim.n
        admission = self._limiter.admit(prompt_tokens, charge, self._limit_clock())
        if not admission.admitted:
            return self._rate_limited(sim, admission)
        encoded = encode_messages(sim.messages)
        key = request_key(sim.model, sim.seed, encoded)
        fault = self._draw_fault(key, sim)
        if fault in replies.FAULT_REPLIES:
            return self._fault_response(fault)
        if fault in {"drop", "stall"}:
            if fault == "stall":
                await self._pacer.wait(self.config.faults.stall_s)
            return send.drop(request)
        cached = self._cache.cached_tokens(sim.model, encoded, tokens)
        completion = build_completion(
            sim, prompt_tokens, cached, id=completion_id(), created=int(time.time()), fault=fault
        )
        if fault == "forced_token":
            if force_first_tokens(completion):
                self._stats.faults[fault] += 1
            else:  # no content token to force (a tool call): the request goes through
                fault = None
        if sim.stream:
            response, complete = await self._send_stream(request, sim, completion, fault)
        else:
            response, complete = await self._send_whole(request, completion, fault)
        if complete and (fault is None or fault in ANSWERING_FAULTS):
            self._record_answer(key, completion.usage)
        return response

    def _draw_fault(self, key: str, sim: SimRequest, *, line: bool = False) -> str | None:
        arrival = self._stats.arrivals[key]
        self._stats.arrivals[key] = arrival + 1
        fault = self._faults.pick_for(key, arrival, sim)
        if line and fault not in ANSWER_FAULTS:  # a Batch API line has no connection to drop
            return None
        if fault is not None and fault != "forced_token":  # that one counts once it applies
            self._stats.faults[fault] += 1
        return fault

    def _record_answer(self, key: str, usage: dict[str, Any]) -> None:
        self._stats.answers[key] += 1
        self._stats.prompt_tokens += usage["prompt_tokens"]
        self._stats.completion_tokens += usage["completion_tokens"]

    def _answer_headers(self, completion: Completion) -> dict[str, str]:
        headers = self._limiter.headers(self._limit_clock())
        headers["x-request-id"] = "req_" + completion.id.removeprefix("chatcmpl-")
        if self.config.close_after_stream:
            headers["Keep-Alive"] = "timeout=5, max=100"  # what llama-server says, and breaks
        return headers

    async def _send_whole(
        self, request: web.Request, completion: Completion, fault: str | None
    ) -> tuple[web.StreamResponse, bool]:
        """A non-streamed answer; the truncate, trickle and body faults change how."""
        await self._pacer.sleep(self._latency.sample())
        # a gateway counts tokens once the answer is in, before it sends the headers
        self._limiter.charge_usage(completion.usage["total_tokens"], self._limit_clock())
        headers = self._answer_headers(completion)
        body = response_body(completion)
        if fault in BODY_FAULTS:
            body = malform(fault, body)
        payload = orjson.dumps(body)
        if fault == "truncate":
            return await send.send_truncated(request, payload, headers, _JSON), False
        if fault == "trickle":
            interval = self.config.faults.trickle_interval_s
            return await send.send_trickled(request, payload, headers, _JSON, self._pacer, interval)
        return web.Response(body=payload, content_type=_JSON, headers=headers), True

    async def _send_stream(
        self, request: web.Request, sim: SimRequest, completion: Completion, fault: str | None
    ) -> tuple[web.StreamResponse, bool]:
        """A streamed answer; the stream faults change its events or how they are sent."""
        headers = self._answer_headers(completion)
        frames = stream.stream_frames(completion, include_usage=sim.include_usage)
        if fault == "stream_error":
            frames = [*frames[: len(frames) // 2], (stream.error_event(replies.SERVER_ERROR), 0)]
        elif fault == "truncate":
            frames = frames[: len(frames) // 2]
        elif fault in BODY_FAULTS:
            frames = malform_frames(fault, frames)
        if fault == "trickle":
            await self._pacer.sleep(self._latency.sample())
            body = b"".join(frame for frame, _ in frames)
            interval = self.config.faults.trickle_interval_s
            response, complete = await send.send_trickled(
                request, body, headers, stream.CONTENT_TYPE, self._pacer, interval
            )
        else:
            response, complete = await send.send_stream(
                request,
                frames,
                headers,
                self._pacer,
                latency=self._latency.sample(),
                tokens_per_s=self.config.tokens_per_s,
                cut=fault == "truncate",
            )
        if complete:
            self._limiter.charge_usage(completion.usage["total_tokens"], self._limit_clock())
            if self.config.close_after_stream:
                self._connections.retire(request)
        return response, complete

    # -- error responses ------------------------------------------------------------------------

    def _is_authorized(self, request: web.Request) -> bool:
        expected = self.config.api_key
        if not expected:
            return True
        given = request.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip(), expected)

    def _unauthorized(self, request: web.Request) -> web.Response:
        status, body = replies.key_refusal(self.config.auth_error, request.headers)
        return _json(status, body, self._limiter.error_headers(self._limit_clock()))

    def _invalid(self, body: dict[str, Any]) -> web.Response:
        return _json(400, body, self._limiter.error_headers(self._limit_clock()))

    def _context_overflow(self, body: dict[str, Any]) -> web.Response:
        if self.config.error_style != "llamacpp":
            return self._invalid(body)
        response = web.Response(
            status=400, body=orjson.dumps(body), content_type=_JSON, charset="utf-8"
        )
        response.force_close()  # llama-server closes the connection after this error
        return response

    def _rate_limited(self, sim: SimRequest, admission: Admission) -> web.Response:
        self._stats.rate_limited += 1
        body, headers = self._limiter.refusal(sim.model, admission, self._limit_clock())
        return _json(429, body, headers)

    def _fault_response(self, fault: str) -> web.Response:
        limit_headers = self._limiter.error_headers(self._limit_clock())
        status, body, headers = replies.fault_reply(
            fault, limit_headers, self.config.faults.retry_after_s
        )
        return _json(status, body, headers)


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(payload), content_type=_JSON, headers=headers
    )
