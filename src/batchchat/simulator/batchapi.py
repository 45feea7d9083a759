"""The simulator's Batch API routes: ``/v1/files`` and ``/v1/batches``, or a server without them.

With ``batch.api: openai`` the routes speak OpenAI's Batch API over the state in
:mod:`batchchat.simulator.batchstore`; the other values answer as servers that have no Batch
API do (checked against llama-server and a LiteLLM proxy; new-api's and vLLM's bodies are
theirs as published), so a client's handling of them can be tested.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from batchchat.planning.tokens import REPLY_PRIMING_TOKENS
from batchchat.simulator import replies
from batchchat.simulator.batchstore import Answer, BatchStore, SimBatch, SimFile
from batchchat.simulator.completion import build_completion, completion_id, response_body
from batchchat.simulator.stats import (
    PrefixCache,
    encode_messages,
    message_tokens,
    request_key,
)
from batchchat.simulator.validate import InvalidRequest, SimRequest, validate_request
from batchchat.spec.batch import BatchSimSpec

_JSON = "application/json"
MAX_LIST = 100
#: how each server without a Batch API answers: (status, body) for uploads and the rest
_UNSUPPORTED: dict[str, tuple[int, Any, Any]] = {
    # llama.cpp's llama-server 404s every unknown path (and closes the connection)
    "llamacpp": (
        404,
        {"error": {"message": "File Not Found", "type": "not_found_error", "code": 404}},
        None,
    ),
    # vLLM's OpenAI server (FastAPI) has no such routes
    "vllm": (404, {"detail": "Not Found"}, None),
    # new-api and one-api gateways: RelayNotImplemented
    "new-api": (
        501,
        {
            "error": {
                "message": "API not implemented",
                "type": "new_api_error",
                "param": "",
                "code": "api_not_implemented",
            }
        },
        None,
    ),
    # a LiteLLM proxy without files_settings, whose upstream (api.openai.com) is unreachable
    "litellm": (
        500,
        {
            "error": {
                "message": "Connection error.",
                "type": "internal_server_error",
                "param": None,
                "code": "500",
            }
        },
        {
            "error": {
                "message": "files_settings is not set, set it on your config.yaml file.",
                "type": "internal_server_error",
                "param": None,
                "code": "500",
            }
        },
    ),
}


class BatchAPI:
    """The Batch API of one simulator: its routes, its state, its counters."""

    def __init__(
        self,
        config: BatchSimSpec,
        clock: Callable[[], float],
        cache: PrefixCache,
        record_answer: Callable[[str, dict[str, Any]], None],
        authorized: Callable[[web.Request], bool],
        answer_fault: Callable[[str, SimRequest], str | None],
    ) -> None:
        self.config = config
        started, epoch = clock(), time.time()
        self.now: Callable[[], float] = lambda: epoch + (clock() - started) * config.time_scale
        self._cache = cache
        self._record_answer = record_answer
        self._authorized = authorized
        #: the answer fault (invalid JSON, off the schema or the labels) of a line, drawn as
        #: the chat endpoint draws it: a batch's answers can be wrong as online ones can
        self._answer_fault = answer_fault
        self.store = BatchStore(config, self.now, self._answer, _prompt_tokens)
        self.requests: Counter[str] = Counter()

    def routes(self) -> list[web.RouteDef]:
        table = [
            ("POST", "/v1/files", self._upload),
            ("GET", "/v1/files", self._list_files),
            ("GET", "/v1/files/{id}", self._file),
            ("GET", "/v1/files/{id}/content", self._content),
            ("DELETE", "/v1/files/{id}", self._delete),
            ("POST", "/v1/batches", self._create),
            ("GET", "/v1/batches", self._list_batches),
            ("GET", "/v1/batches/{id}", self._batch),
            ("POST", "/v1/batches/{id}/cancel", self._cancel),
        ]
        return [
            web.route(method, path, self._guarded(f"{method} {path}", handler))
            for method, path, handler in table
        ]

    def stats(self) -> dict[str, Any]:
        """The ``batch`` section of ``GET /stats``."""
        batches = list(self.store.batches.values())
        for batch in batches:
            self.store.advance(batch)
        submitted = self.store.submissions
        return {
            "requests": dict(self.requests),
            "files_uploaded": self.store.uploads,
            "files_stored": len(self.store.files),
            "batches_created": len(batches),
            "lines_per_batch": [len(batch.checked.lines) for batch in batches],
            "by_status": dict(Counter(batch.status for batch in batches)),
            "lines_submitted": sum(submitted.values()),
            "lines_ok": self.store.lines_ok,
            "lines_failed": self.store.lines_failed,
            "custom_ids": len(submitted),
            "most_submissions": max(submitted.values(), default=0),
        }

    # -- the guard: auth, and servers without a Batch API -----------------------------------

    def _guarded(
        self, name: str, handler: Callable[[web.Request], Any]
    ) -> Callable[[web.Request], Any]:
        upload = name == "POST /v1/files"

        async def guarded(request: web.Request) -> web.StreamResponse:
            self.requests[name] += 1
            style = self.config.api
            if style == "llamacpp":  # no auth check: the 404 comes first
                response = _json(*_UNSUPPORTED[style][:2])
                response.force_close()
                return response
            if not self._authorized(request):
                return _refused_key(style, request)
            if style != "openai":
                status, body, upload_body = _UNSUPPORTED[style]
                return _json(status, upload_body if upload and upload_body else body)
            answer: web.StreamResponse = await handler(request)
            if self.config.answer_delay_s:
                await asyncio.sleep(self.config.answer_delay_s)
            return answer

        return guarded

    # -- files ------------------------------------------------------------------------------

    async def _upload(self, request: web.Request) -> web.Response:
        try:
            form = await request.post()
        except (ValueError, web.HTTPException):
            return _invalid("Expected a multipart/form-data body with purpose and file.")
        purpose, upload = form.get("purpose"), form.get("file")
        if not isinstance(purpose, str) or purpose not in ("batch", "fine-tune", "assistants"):
            return _invalid("'purpose' must be one of batch, fine-tune, assistants.", "purpose")
        if not isinstance(upload, web.FileField):
            return _invalid("'file' is a required field.", "file")
        content = upload.file.read()
        return _json(200, self.store.add_file(upload.filename, purpose, content).to_dict())

    async def _list_files(self, request: web.Request) -> web.Response:
        purpose = request.query.get("purpose")
        files = [f for f in self.store.files.values() if purpose in (None, f.purpose)]
        return _json(200, _page([f.to_dict() for f in reversed(files)], request))

    async def _file(self, request: web.Request) -> web.Response:
        file = self._find_file(request)
        return file if isinstance(file, web.Response) else _json(200, file.to_dict())

    async def _content(self, request: web.Request) -> web.Response:
        file = self._find_file(request)
        if isinstance(file, web.Response):
            return file
        return web.Response(body=file.content, content_type="application/octet-stream")

    async def _delete(self, request: web.Request) -> web.Response:
        file = self._find_file(request)
        if isinstance(file, web.Response):
            return file
        del self.store.files[file.id]
        return _json(200, {"id": file.id, "object": "file", "deleted": True})

    def _find_file(self, request: web.Request) -> SimFile | web.Response:
        file_id = request.match_info["id"]
        file = self.store.files.get(file_id)
        if file is None:
            return _json(404, replies.error_body(f"No such File object: {file_id}", *_NOT_FOUND))
        return file

    # -- batches ----------------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.Response:
        try:
            data = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _json(400, replies.unparsable_body())
        if not isinstance(data, dict):
            return _invalid("Expected a JSON object.")
        file = self.store.files.get(str(data.get("input_file_id")))
        if file is None or file.purpose != "batch":
            return _invalid(f"Invalid 'input_file_id': {data.get('input_file_id')!r}.")
        endpoint = data.get("endpoint")
        if endpoint not in ("/v1/chat/completions", "/v1/embeddings", "/v1/completions"):
            return _invalid(f"Invalid 'endpoint': {endpoint!r}.", "endpoint")
        window = data.get("completion_window")
        if not isinstance(window, str) or not _is_window(window):
            return _invalid(
                f"Invalid 'completion_window': {window!r}. Supported values are: '24h'.",
                "completion_window",
            )
        metadata = data.get("metadata")
        if metadata is not None and (not isinstance(metadata, dict) or len(metadata) > 16):
            return _invalid("'metadata' holds at most 16 key-value pairs.", "metadata")
        batch = self.store.create(file, endpoint, window, metadata)
        return _json(200, batch.to_dict())

    async def _list_batches(self, request: web.Request) -> web.Response:
        limit = _limit(request)
        found, more = self.store.listed(request.query.get("after"), limit)
        data = [batch.to_dict() for batch in found]
        return _json(200, _listing(data, more))

    async def _batch(self, request: web.Request) -> web.Response:
        batch = self._find_batch(request)
        if isinstance(batch, web.Response):
            return batch
        self.store.advance(batch)
        return _json(200, batch.to_dict())

    async def _cancel(self, request: web.Request) -> web.Response:
        batch = self._find_batch(request)
        if isinstance(batch, web.Response):
            return batch
        if not self.store.cancel(batch):
            return _invalid(f"Cannot cancel a batch with status '{batch.status}'.")
        return _json(200, batch.to_dict())

    def _find_batch(self, request: web.Request) -> SimBatch | web.Response:
        batch_id = request.match_info["id"]
        batch = self.store.batches.get(batch_id)
        if batch is None:
            return _json(
                404, replies.error_body(f"No batch found with id '{batch_id}'.", *_NOT_FOUND)
            )
        return batch

    # -- answering a line -------------------------------------------------------------------

    def _answer(self, body: dict[str, Any]) -> Answer:
        """A line's answer, computed as the chat endpoint computes it (no rate limits)."""
        try:
            sim = validate_request(body)
        except InvalidRequest as exc:
            return 400, replies.invalid_body(exc), None
        tokens = message_tokens(sim.messages)
        prompt_tokens = REPLY_PRIMING_TOKENS + sum(tokens)
        encoded = encode_messages(sim.messages)
        cached = self._cache.cached_tokens(sim.model, encoded, tokens)
        key = request_key(sim.model, sim.seed, encoded)
        fault = self._answer_fault(key, sim)
        completion = build_completion(
            sim, prompt_tokens, cached, id=completion_id(), created=int(self.now()), fault=fault
        )
        self._record_answer(key, completion.usage)
        return 200, response_body(completion), completion.usage


_NOT_FOUND = ("invalid_request_error", None, None)


def _refused_key(style: str, request: web.Request) -> web.Response:
    """401; a LiteLLM proxy without its database answers a wrong key with a 400 instead."""
    if style != "litellm":
        return _json(401, replies.unauthorized_body())
    if "Authorization" not in request.headers:
        message, kind, param, code = (
            "Authentication Error, No api key passed in.",
            "auth_error",
            "None",
            "401",
        )
        return _json(
            401, {"error": {"message": message, "type": kind, "param": param, "code": code}}
        )
    error = {
        "message": "No connected db.",
        "type": "no_db_connection",
        "param": None,
        "code": "400",
    }
    return _json(400, {"error": error})


def _prompt_tokens(body: dict[str, Any]) -> int:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return 0
    try:
        return REPLY_PRIMING_TOKENS + sum(message_tokens(messages))
    except (TypeError, ValueError, AttributeError):
        return 0  # a body the line will fail on: it holds no tokens in the queue


def _is_window(window: str) -> bool:
    hours = window.removesuffix("h")
    return window.endswith("h") and hours.isdigit() and 24 <= int(hours) <= 336


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", "20")
    return max(1, min(MAX_LIST, int(raw))) if raw.isdigit() else 20


def _page(data: list[dict[str, Any]], request: web.Request) -> dict[str, Any]:
    after = request.query.get("after")
    if after is not None:
        ids = [item["id"] for item in data]
        data = data[ids.index(after) + 1 :] if after in ids else []
    limit = _limit(request)
    return _listing(data[:limit], len(data) > limit)


def _listing(data: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": more,
    }


def _invalid(message: str, param: str | None = None) -> web.Response:
    return _json(400, replies.error_body(message, "invalid_request_error", param, None))


def _json(status: int, payload: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type=_JSON)
