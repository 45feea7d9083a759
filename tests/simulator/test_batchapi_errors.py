"""The simulator's Batch API refuses malformed calls with OpenAI's kind of 400s and 404s."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from batchchat.simulator import SimulatorServer
from tests.conftest import SimulatorFactory


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> tuple[int, Any]:
    async with http.request(method, url, **kw) as response:
        return response.status, orjson.loads(await response.read())


async def upload(http: aiohttp.ClientSession, sim: SimulatorServer) -> str:
    form = aiohttp.FormData({"purpose": "batch"})
    line = {
        "custom_id": "a#0",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": "oops"},
    }
    form.add_field("file", orjson.dumps(line), filename="in.jsonl")
    status, data = await call(http, "POST", sim.base_url + "/files", data=form)
    assert status == 200
    return str(data["id"])


GOOD = {"input_file_id": "FILE", "endpoint": "/v1/chat/completions", "completion_window": "24h"}


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{nope", "could not parse the JSON body"),
        (b"[]", "Expected a JSON object"),
        (orjson.dumps({**GOOD, "input_file_id": "file-none"}), "Invalid 'input_file_id'"),
        (orjson.dumps({**GOOD, "endpoint": "/v2/x"}), "Invalid 'endpoint'"),
        (orjson.dumps({**GOOD, "completion_window": "1h"}), "Invalid 'completion_window'"),
        (orjson.dumps({**GOOD, "metadata": [1]}), "'metadata' holds at most"),
    ],
)
async def test_a_create_that_cannot_be_a_batch_is_a_400(
    simulator: SimulatorServer, http: aiohttp.ClientSession, body: bytes, says: str
) -> None:
    file_id = await upload(http, simulator)
    status, data = await call(
        http, "POST", simulator.base_url + "/batches", data=body.replace(b"FILE", file_id.encode())
    )
    assert status == 400 and says in data["error"]["message"]


async def test_uploads_need_a_purpose_and_a_file(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    url = simulator.base_url + "/files"
    status, data = await call(http, "POST", url, data=aiohttp.FormData({"purpose": "x"}))
    assert status == 400 and data["error"]["param"] == "purpose"
    status, data = await call(http, "POST", url, data=aiohttp.FormData({"purpose": "batch"}))
    assert status == 400 and data["error"]["param"] == "file"
    status, _ = await call(http, "POST", url, data=b"plain", headers={"content-type": "text/plain"})
    assert status == 400


async def test_unknown_files_and_batches_are_404s(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    base = simulator.base_url
    calls = [
        ("GET", "/files/f-1"),
        ("GET", "/files/f-1/content"),
        ("DELETE", "/files/f-1"),
        ("GET", "/batches/b-1"),
        ("POST", "/batches/b-1/cancel"),
    ]
    for method, path in calls:
        status, data = await call(http, method, base + path)
        assert status == 404 and "No " in data["error"]["message"], path


async def test_a_line_whose_body_a_strict_server_refuses_is_a_400_in_the_error_file(
    simulator_factory: SimulatorFactory, http: aiohttp.ClientSession
) -> None:
    sim = await simulator_factory(batch={"time_scale": 100000, "validating_s": 0})
    file_id = await upload(http, sim)
    request = {
        "input_file_id": file_id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    _, batch = await call(http, "POST", sim.base_url + "/batches", json=request)
    _, listed = await call(http, "GET", sim.base_url + "/files?purpose=batch&after=" + file_id)
    assert listed["data"] == []
    for _ in range(100):
        _, batch = await call(http, "GET", sim.base_url + f"/batches/{batch['id']}")
        if batch["status"] == "completed":
            break
    assert batch["request_counts"] == {"total": 1, "completed": 0, "failed": 1}
    async with http.get(sim.base_url + f"/files/{batch['error_file_id']}/content") as response:
        line = orjson.loads(await response.read())
    assert line["response"]["status_code"] == 400
    assert line["response"]["body"]["error"]["type"] == "invalid_request_error"
