"""The Batch API over the transport seam: files up and down, batches created, read, cancelled.

Every call goes through :class:`batchchat.execute.transport.Transport`, so the network is
aiohttp in a run and a function in unit tests. An error status becomes the typed error
:func:`batchchat.execute.parse.status_error` makes of it; what is worth another try is
decided by :mod:`batchchat.execute.retry`. Creating a batch is never retried blindly (a
create that timed out may have created one): :meth:`BatchClient.create` makes one attempt
and the executor looks for the batch by its metadata before it tries again.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlencode

import orjson

from batchchat.errors import (
    APIStatusError,
    AuthenticationError,
    BatchAPIError,
    BatchUnsupportedError,
    RequestError,
    TransportError,
)
from batchchat.execute.parse import status_error
from batchchat.execute.retry import RetryPolicy
from batchchat.execute.transport import HTTPRequest, Transport
from batchchat.secrets import redact_shapes
from batchchat.spec import RetrySpec

#: what a server without a Batch API answers on its routes
_ABSENT = frozenset({404, 405, 501})
#: a page of ``GET /batches`` (OpenAI's most)
PAGE = 100
#: tries of the capability probe when the server answers 5xx (a gateway without batch
#: support answers 500 for good; a few tries tell that from a passing failure)
PROBE_ATTEMPTS = 3

Sleep = Callable[[float], Awaitable[None]]


def api_root(base_url: str) -> str:
    """``https://host/v1`` (or ``…/v1/chat/completions``) → ``https://host/v1``."""
    return base_url.rstrip("/").removesuffix("/chat/completions")


def multipart(filename: str, content: bytes, fields: Mapping[str, str]) -> tuple[bytes, str]:
    """A multipart/form-data body with ``fields`` and the file; and its content type."""
    boundary = "batchchat-" + os.urandom(12).hex()
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    quoted = filename.replace('"', "_")
    parts.append(
        f"--{boundary}\r\nContent-Disposition: form-data; "
        f'name="file"; filename="{quoted}"\r\nContent-Type: application/jsonl\r\n\r\n'.encode()
    )
    parts += [content, f"\r\n--{boundary}--\r\n".encode()]
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class BatchClient:
    """One endpoint's Batch API: ``/files`` and ``/batches`` under its API root."""

    def __init__(
        self,
        transport: Transport,
        base_url: str,
        headers: Mapping[str, str],
        *,
        retry: RetrySpec,
        display: str,
        sleep: Sleep = asyncio.sleep,
        redact: Callable[[str], str] = redact_shapes,
    ) -> None:
        self._transport = transport
        #: masks secrets in what a server said, before it goes into an error message
        self.redact = redact
        self._root = api_root(base_url)
        self._headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
        self._policy = RetryPolicy(retry)
        self._sleep = sleep
        #: the endpoint as people see it (no credentials)
        self.display = api_root(display)

    # -- capability --------------------------------------------------------------------------

    async def probe(self) -> None:
        """Check the endpoint runs Batch API jobs before anything is written or sent.

        Raises :class:`BatchUnsupportedError` when it has no Batch API (404, 405, 501, other
        4xx, or a 200 that is not a list of batches), :class:`BatchAPIError` when it refuses
        the key, cannot be reached, or fails with 5xx.
        """
        try:
            listing = await self._json("GET", "batches?limit=1", attempts=PROBE_ATTEMPTS)
        except BatchAPIError as exc:
            error = _probe_error(self.display, exc)
            raise type(error)(self.redact(str(error))) from None
        if not isinstance(listing.get("data"), list):
            raise BatchUnsupportedError(_no_batch_api(self.display, "gave no list of batches"))

    # -- files -------------------------------------------------------------------------------

    async def upload(self, filename: str, content: bytes) -> str:
        """Upload a Batch API input file; its file id."""
        body, content_type = multipart(filename, content, {"purpose": "batch"})
        data = await self._json("POST", "files", body, content_type=content_type)
        return _text(data, "id", "POST /files")

    async def content(self, file_id: str) -> bytes:
        """The bytes of a file (an output or error file)."""
        return await self._call("GET", f"files/{file_id}/content")

    async def delete_file(self, file_id: str) -> bool:
        """Delete a file; False when the provider does not have it (any more)."""
        try:
            await self._call("DELETE", f"files/{file_id}")
        except BatchAPIError as exc:
            if _status_of(exc) == 404:
                return False
            raise
        return True

    # -- batches -----------------------------------------------------------------------------

    async def create(
        self, file_id: str, url: str, window: str, metadata: Mapping[str, str]
    ) -> dict[str, Any]:
        """Create a batch of an uploaded file: one attempt (see the module's docstring)."""
        request = {
            "input_file_id": file_id,
            "endpoint": url,
            "completion_window": window,
            "metadata": dict(metadata),
        }
        body = orjson.dumps(request)
        return await self._json("POST", "batches", body, attempts=1)

    async def retrieve(self, batch_id: str) -> dict[str, Any]:
        return await self._json("GET", f"batches/{batch_id}")

    async def cancel(self, batch_id: str) -> dict[str, Any]:
        return await self._json("POST", f"batches/{batch_id}/cancel", b"")

    async def list_batches(
        self, *, after: str | None = None, limit: int = PAGE
    ) -> tuple[list[dict[str, Any]], bool]:
        """A page of batches, newest first; and whether more follow."""
        query = {"limit": str(limit), **({"after": after} if after else {})}
        data = await self._json("GET", f"batches?{urlencode(query)}")
        batches = [item for item in data.get("data") or [] if isinstance(item, dict)]
        return batches, bool(data.get("has_more"))

    # -- the calls ---------------------------------------------------------------------------

    async def _json(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        content_type: str = "application/json",
        attempts: int | None = None,
    ) -> dict[str, Any]:
        raw = await self._call(method, path, body, content_type=content_type, attempts=attempts)
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            shown = raw[:80].decode("utf-8", "replace")
            raise BatchAPIError(
                f"{method} /{path.split('?')[0]} answered with a body that is no JSON object: "
                f"{shown!r}"
            )
        return data

    async def _call(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        content_type: str = "application/json",
        attempts: int | None = None,
    ) -> bytes:
        """The body of a 2xx answer; retries what is worth retrying, then BatchAPIError."""
        headers = {**self._headers, "Content-Type": content_type}
        request = HTTPRequest(f"{self._root}/{path}", body, headers, method=method)
        attempt = 0
        while True:
            attempt += 1
            error = await self._attempt(request)
            if isinstance(error, bytes):
                return error
            wait = self._policy.next_wait(error, attempt, congested=True)
            if wait is None or (attempts is not None and attempt >= attempts):
                raise _call_error(method, path, error, attempt, self.redact)
            await self._sleep(wait)

    async def _attempt(self, request: HTTPRequest) -> bytes | RequestError:
        try:
            response = await self._transport.send(request)
        except TransportError as exc:
            return exc
        if 200 <= response.status < 300:
            return response.body
        return status_error(response.status, response.headers, response.body)


def _call_error(
    method: str, path: str, error: RequestError, attempts: int, redact: Callable[[str], str]
) -> BatchAPIError:
    tries = f" ({attempts} tries)" if attempts > 1 else ""
    failure = BatchAPIError(redact(f"{method} /{path.split('?')[0]} failed{tries}: {error}"))
    failure.__cause__ = error
    return failure


def _status_of(error: BaseException) -> int | None:
    cause = error.__cause__
    return cause.http_status if isinstance(cause, APIStatusError) else None


def _probe_error(display: str, error: BatchAPIError) -> BatchAPIError:
    cause, status = error.__cause__, _status_of(error)
    if isinstance(cause, AuthenticationError):
        return BatchAPIError(
            f"{display} refused the key for the Batch API ({cause}); check the key "
            "(endpoint.api_key_env) and that it may use /v1/files and /v1/batches"
        )
    answered = f"answered {str(cause).rstrip('.')}"
    if status in _ABSENT:
        return BatchUnsupportedError(_no_batch_api(display, answered))
    if status is not None and 400 <= status < 500 and status != 429:
        return BatchUnsupportedError(_no_batch_api(display, answered, refused=True))
    if status is not None and status >= 500:
        return BatchAPIError(_no_batch_api(display, answered, maybe=True))
    return BatchAPIError(f"the Batch API of {display} cannot be reached: {error}")


def _no_batch_api(display: str, what: str, *, maybe: bool = False, refused: bool = False) -> str:
    """Why batch mode cannot run here, and what to do instead."""
    if maybe:
        head = (
            f"{display} did not answer like a Batch API: GET /batches {what}. If the endpoint "
            "does run batches, try again later; a gateway without Batch API support (a LiteLLM "
            "proxy without files_settings, say) answers like this for good."
        )
    elif refused:
        head = (
            f"{display} refused the Batch API: GET /batches {what}. The endpoint, the key or "
            "the gateway's configuration does not allow Batch API jobs here."
        )
    else:
        head = f"{display} runs no Batch API jobs: GET /batches {what}."
    return (
        f"{head} Servers such as vLLM and llama.cpp's llama-server, and gateways such as "
        "new-api and one-api, have no Batch API. Run the job in online mode (mode: online, "
        "the default), or write its requests with `batchchat plan JOB.yaml --out "
        "requests.jsonl`, run them where batches are supported (e.g. `vllm run-batch -i "
        "requests.jsonl -o results.jsonl`) and bring the answers in with `batchchat import "
        "JOB.yaml results.jsonl`."
    )


def _text(data: Mapping[str, Any], key: str, call: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise BatchAPIError(f"{call} answered without {key!r}: {str(data)[:200]}")
    return value
