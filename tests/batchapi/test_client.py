"""The Batch API client over HTTP to the simulator, and through the transport seam: the
capability probe, uploads, creates that are never retried blindly, and finding a batch
by its metadata."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from batchchat.batchapi.client import BatchClient, api_root, multipart
from batchchat.batchapi.collect import BatchRun
from batchchat.batchapi.executor import find_created
from batchchat.batchapi.state import BatchState, Shard
from batchchat.errors import BatchAPIError, BatchUnsupportedError
from batchchat.execute.transport import AiohttpTransport, HTTPRequest, HTTPResponse, MockTransport
from batchchat.models import ExecutionStats
from batchchat.pricing import PriceTable
from batchchat.results.layout import OutputLayout
from batchchat.secrets import Redactor
from batchchat.simulator import SimulatorServer
from batchchat.spec import BatchSpec, EndpointSpec, RetrySpec
from tests.conftest import SimulatorFactory

RETRY = RetrySpec(max_attempts=3, initial_wait_s=0.01, max_wait_s=0.02)
Connect = Callable[..., BatchClient]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """``connect(server_or_url, headers=...)``: a client over a real aiohttp transport."""
    transports: list[AiohttpTransport] = []

    def connected(
        target: SimulatorServer | str, headers: dict[str, str] | None = None
    ) -> BatchClient:
        url = target if isinstance(target, str) else target.base_url
        transports.append(AiohttpTransport(EndpointSpec(timeout_s=5), max_connections=2))
        return BatchClient(transports[-1], url, headers or {}, retry=RETRY, display=url)

    yield connected
    for transport in transports:
        await transport.aclose()


async def no_sleep(_: float) -> None:
    return None


def test_the_api_root_is_found_from_any_base_url() -> None:
    assert api_root("https://api.openai.com/v1/") == "https://api.openai.com/v1"
    assert api_root("http://h/v1/chat/completions") == "http://h/v1"


def test_multipart_bodies_carry_the_fields_and_the_file() -> None:
    body, content_type = multipart('my"file.jsonl', b'{"a": 1}\n', {"purpose": "batch"})
    boundary = content_type.split("boundary=")[1]
    assert body.startswith(f"--{boundary}\r\n".encode()) and body.endswith(
        f"--{boundary}--\r\n".encode()
    )
    assert b'name="purpose"\r\n\r\nbatch\r\n' in body
    assert b'filename="my_file.jsonl"' in body and b'{"a": 1}\n' in body


async def test_the_probe_passes_on_a_batch_api(
    simulator: SimulatorServer, connect: Connect
) -> None:
    await connect(simulator).probe()


@pytest.mark.parametrize(
    ("style", "error", "says"),
    [
        ("llamacpp", BatchUnsupportedError, "HTTP 404 not_found_error: File Not Found"),
        ("vllm", BatchUnsupportedError, "HTTP 404: Not Found"),
        ("new-api", BatchUnsupportedError, "HTTP 501 api_not_implemented: API not implemented"),
        ("litellm", BatchAPIError, "HTTP 500 internal_server_error: Connection error."),
    ],
)
async def test_the_probe_says_plainly_when_there_is_no_batch_api(
    simulator_factory: SimulatorFactory, connect: Connect, style: str, error: type, says: str
) -> None:
    server = await simulator_factory(batch={"api": style})
    with pytest.raises(error) as info:
        await connect(server).probe()
    message = str(info.value)
    assert says in message
    assert "online mode" in message and "batchchat plan JOB.yaml --out" in message
    assert type(info.value) is error  # 404/501: exit 2; 5xx (maybe passing): exit 1


async def test_the_probe_says_when_the_key_is_refused(
    simulator_factory: SimulatorFactory, connect: Connect
) -> None:
    server = await simulator_factory(api_key="sk-right")
    with pytest.raises(BatchAPIError, match="refused the key for the Batch API") as info:
        await connect(server, {"Authorization": "Bearer sk-wrong"}).probe()
    assert "sk-wrong" not in str(info.value) and "sk-right" not in str(info.value)


async def test_the_probe_says_when_the_endpoint_cannot_be_reached(connect: Connect) -> None:
    with pytest.raises(BatchAPIError, match="cannot be reached"):
        await connect("http://127.0.0.1:9/v1").probe()


async def test_a_create_is_made_once_even_when_it_fails() -> None:
    seen: list[str] = []

    def flaky(request: HTTPRequest) -> HTTPResponse:
        seen.append(f"{request.method} {request.url}")
        return HTTPResponse(503, {}, b'{"error": {"message": "overloaded"}}')

    client = BatchClient(
        MockTransport(flaky), "http://x/v1", {}, retry=RETRY, display="x", sleep=no_sleep
    )
    with pytest.raises(BatchAPIError, match="POST /batches failed: HTTP 503"):
        await client.create("file-1", "/v1/chat/completions", "24h", {"k": "v"})
    assert seen == ["POST http://x/v1/batches"]
    seen.clear()
    with pytest.raises(BatchAPIError, match=r"GET /batches/b1 failed \(3 tries\)"):
        await client.retrieve("b1")  # reads are retried
    assert len(seen) == 3


async def test_a_body_that_is_no_json_object_is_an_error_not_a_crash() -> None:
    client = BatchClient(
        MockTransport(lambda request: HTTPResponse(200, {}, b"<html>")),
        "http://x/v1",
        {},
        retry=RETRY,
        display="x",
    )
    with pytest.raises(BatchAPIError, match="no JSON object"):
        await client.retrieve("b1")


async def test_a_batch_is_found_by_its_metadata_key_or_its_shard_is_made_ready_again(
    simulator: SimulatorServer, connect: Connect, tmp_path: Path
) -> None:
    client = connect(simulator)
    state = BatchState("dirtoken")
    found = Shard("s00001", "m", 1, 0, 0, phase="creating", intent_at=0.0)
    missing = Shard("s00002", "m", 1, 0, 0, phase="creating", intent_at=0.0)
    state.shards = [found, missing]
    line = {"custom_id": "a#0", "method": "POST", "url": "/v1/chat/completions", "body": {}}
    file_id = await client.upload("in.jsonl", orjson.dumps(line) + b"\n")
    made = await client.create(
        file_id, "/v1/chat/completions", "24h", {"batchchat_key": found.metadata_key("dirtoken")}
    )
    for _ in range(3):  # other batches, newer, without the key
        await client.create(file_id, "/v1/chat/completions", "24h", {})
    run = BatchRun(
        OutputLayout(tmp_path), state, BatchSpec(), client, PriceTable({}), {}, False,
        lambda result: None, lambda: None, ExecutionStats("r", started_at=datetime.now(UTC)),
    )  # fmt: skip
    assert not await find_created(run, [found, missing])
    assert (found.phase, found.batch_id) == ("submitted", made["id"])
    assert (missing.phase, missing.batch_id) == ("uploaded", None)
    assert simulator.stats()["batch"]["batches_created"] == 4


async def test_a_search_reads_older_pages_until_it_finds_the_batch(
    simulator: SimulatorServer, connect: Connect, tmp_path: Path
) -> None:
    client = connect(simulator)
    line = {"custom_id": "a#0", "method": "POST", "url": "/v1/chat/completions", "body": {}}
    file_id = await client.upload("in.jsonl", orjson.dumps(line) + b"\n")
    state = BatchState("tok")
    wanted = Shard("s00001", "m", 1, 0, 0, phase="creating", intent_at=0.0)
    state.shards = [wanted]
    url = "/v1/chat/completions"
    made = await client.create(file_id, url, "24h", {"batchchat_key": wanted.metadata_key("tok")})
    for _ in range(120):  # newer batches: a page and more
        await client.create(file_id, url, "24h", {})
    run = BatchRun(
        OutputLayout(tmp_path), state, BatchSpec(), client, PriceTable({}), {}, False,
        lambda result: None, lambda: None, ExecutionStats("r", started_at=datetime.now(UTC)),
    )  # fmt: skip
    assert await find_created(run, [wanted])
    assert wanted.batch_id == made["id"]


async def test_odd_answers_of_the_files_api_are_errors_or_said_plainly() -> None:
    def provider(request: HTTPRequest) -> HTTPResponse:
        if request.method == "DELETE":
            return HTTPResponse(404, {}, b'{"error": {"message": "No such File object"}}')
        if request.url.endswith("/files"):
            return HTTPResponse(200, {}, b'{"object": "file"}')
        return HTTPResponse(200, {}, b'{"object": "list"}')

    client = BatchClient(MockTransport(provider), "http://x/v1", {}, retry=RETRY, display="x")
    assert await client.delete_file("file-1") is False
    with pytest.raises(BatchAPIError, match="POST /files answered without 'id'"):
        await client.upload("in.jsonl", b"{}\n")
    with pytest.raises(BatchUnsupportedError, match="GET /batches gave no list of batches"):
        await client.probe()


async def test_a_key_a_server_echoes_never_reaches_an_error_message() -> None:
    key = "sk-echoed-secret-123456"

    def echoing(request: HTTPRequest) -> HTTPResponse:
        body = {"error": {"message": f"Incorrect API key provided: {key}", "code": "bad"}}
        return HTTPResponse(400, {}, orjson.dumps(body))

    client = BatchClient(
        MockTransport(echoing),
        "http://x/v1",
        {"Authorization": f"Bearer {key}"},
        retry=RETRY,
        display="x",
        redact=Redactor(frozenset({key})),
    )
    for call in (client.probe(), client.retrieve("b1")):
        with pytest.raises(BatchAPIError) as info:
            await call
        assert key not in str(info.value) and "Incorrect API key provided" in str(info.value)
