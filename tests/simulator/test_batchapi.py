"""The simulator's Batch API, driven by the official ``openai`` client over HTTP: files,
batches moving through their statuses under simulated time, its faults, and the answers of
servers that have no Batch API."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from batchchat.simulator import SimulatorServer
from batchchat.spec import SimulatorSpec
from tests.conftest import ManualClock, SimulatorFactory
from tests.simulator._client import get

#: the default pace: validating 30 s, in progress 600 s, finalizing 30 s (simulated)
DONE_S = 661.0


def line(i: int, **body: Any) -> dict[str, Any]:
    request = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": f"question {i}"}],
        "max_tokens": 5,
        **body,
    }
    return {
        "custom_id": f"r{i}#0",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": request,
    }


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"\n".join(orjson.dumps(item) for item in lines) + b"\n"


Start = Callable[..., Awaitable[tuple[SimulatorServer, openai.AsyncOpenAI]]]


@pytest.fixture
async def start(
    simulator_factory: SimulatorFactory, manual_clock: ManualClock
) -> AsyncIterator[Start]:
    """``await start(**batch_knobs)``: a simulator on the manual clock (one simulated second
    per second) and an ``openai`` client of it, closed at teardown."""
    clients: list[openai.AsyncOpenAI] = []

    async def started(**batch: Any) -> tuple[SimulatorServer, openai.AsyncOpenAI]:
        spec = SimulatorSpec.model_validate({"batch": {"time_scale": 1, **batch}})
        sim = await simulator_factory(spec, clock=manual_clock)
        clients.append(openai.AsyncOpenAI(base_url=sim.base_url, api_key="k", max_retries=0))
        return sim, clients[-1]

    yield started
    for client in clients:
        await client.close()


async def submit(client: openai.AsyncOpenAI, lines: list[dict[str, Any]], **extra: Any) -> Any:
    file = await client.files.create(file=("in.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    return await client.batches.create(
        input_file_id=file.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        **extra,
    )


async def lines_of(client: openai.AsyncOpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    content = await client.files.content(file_id)
    return [orjson.loads(raw) for raw in content.content.splitlines()]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_a_batch_goes_through_its_statuses_and_answers_every_line(
    start: Start, manual_clock: ManualClock
) -> None:
    sim, client = await start()
    batch = await submit(client, [line(i) for i in range(20)], metadata={"k": "v"})
    assert (batch.status, batch.request_counts.total, batch.metadata) == (
        "validating",
        20,
        {"k": "v"},
    )
    seen = []
    for step in (31, 600, 31):
        manual_clock.advance(step)
        seen.append((await client.batches.retrieve(batch.id)).status)
    assert seen == ["in_progress", "finalizing", "completed"]
    done = await client.batches.retrieve(batch.id)
    assert done.request_counts.completed == 20 and done.error_file_id is None
    assert done.usage is not None and done.usage.input_tokens > 0
    output = await lines_of(client, done.output_file_id)
    assert sorted(item["custom_id"] for item in output) == sorted(f"r{i}#0" for i in range(20))
    assert [item["custom_id"] for item in output] != [f"r{i}#0" for i in range(20)]  # shuffled
    body = output[0]["response"]["body"]
    assert output[0]["response"]["status_code"] == 200 and body["object"] == "chat.completion"
    stats = sim.stats()
    assert stats["batch"]["batches_created"] == 1 and stats["batch"]["lines_per_batch"] == [20]
    assert stats["answered"] == 20  # batch lines count among the answers, once each


async def test_failing_and_expiring_lines_are_drawn_again_when_resubmitted(
    start: Start, manual_clock: ManualClock
) -> None:
    sim, client = await start(fail_lines=0.3, expire_lines=0.2, fail_status=500)
    first = await submit(client, [line(i) for i in range(100)])
    manual_clock.advance(DONE_S)
    first = await client.batches.retrieve(first.id)
    assert first.status == "expired"  # some lines were not run in the window
    errors = await lines_of(client, first.error_file_id)
    expired = [e for e in errors if e["response"] is None]
    failed = [e for e in errors if e["response"] is not None]
    assert expired and failed
    assert expired[0]["error"]["code"] == "batch_expired"
    assert {e["response"]["status_code"] for e in failed} == {500}
    again = [int(e["custom_id"][1:-2]) for e in errors]
    second = await submit(client, [line(i) for i in again])
    manual_clock.advance(DONE_S)
    second = await client.batches.retrieve(second.id)
    assert second.request_counts.completed > 0  # a second draw, not the same fate
    assert sim.stats()["batch"]["most_submissions"] == 2


async def test_validation_failures_name_their_lines_or_the_file(
    start: Start, manual_clock: ManualClock
) -> None:
    _, client = await start()
    lines = [line(0), line(0), line(2, model="other"), line(3, stream=True)]
    lines[1]["custom_id"] = "r0#0"  # a duplicate id
    lines[2]["body"]["model"] = "gpt-4o"
    batch = await submit(client, lines)
    manual_clock.advance(31)
    failed = await client.batches.retrieve(batch.id)
    assert failed.status == "failed" and failed.output_file_id is None
    assert failed.errors is not None
    codes = {(e.code, e.line) for e in failed.errors.data or []}
    assert codes == {("duplicate_custom_id", 2), ("mismatched_model", 3), ("invalid_request", 4)}


async def test_a_batch_past_the_enqueued_token_limit_fails_with_token_limit_exceeded(
    start: Start, manual_clock: ManualClock
) -> None:
    _, client = await start(enqueued_token_limit=150)
    first = await submit(client, [line(i) for i in range(10)])  # 10 × 12 tokens
    second = await submit(client, [line(i) for i in range(10, 20)])
    manual_clock.advance(31)
    refused = await client.batches.retrieve(second.id)
    assert refused.status == "failed"
    assert refused.errors is not None and refused.errors.data
    assert refused.errors.data[0].code == "token_limit_exceeded"
    assert (await client.batches.retrieve(first.id)).status == "in_progress"
    manual_clock.advance(DONE_S)  # the first one ended: the queue has room again
    third = await submit(client, [line(i) for i in range(10, 20)])
    manual_clock.advance(31)
    assert (await client.batches.retrieve(third.id)).status == "in_progress"


async def test_a_batch_whose_every_line_fails_completes_without_an_output_file(
    start: Start, manual_clock: ManualClock
) -> None:
    _, client = await start(no_output_file=1.0)
    batch = await submit(client, [line(i) for i in range(5)])
    manual_clock.advance(DONE_S)
    done = await client.batches.retrieve(batch.id)
    assert done.status == "completed" and done.output_file_id is None
    assert len(await lines_of(client, done.error_file_id)) == 5


async def test_cancelling_keeps_what_was_answered(start: Start, manual_clock: ManualClock) -> None:
    _, client = await start(shuffle=False)
    batch = await submit(client, [line(i) for i in range(10)])
    manual_clock.advance(30 + 300)  # half way through
    assert (await client.batches.cancel(batch.id)).status == "cancelling"
    manual_clock.advance(61)
    cancelled = await client.batches.retrieve(batch.id)
    assert cancelled.status == "cancelled" and cancelled.request_counts.completed == 5
    assert len(await lines_of(client, cancelled.output_file_id)) == 5
    with pytest.raises(openai.BadRequestError, match="Cannot cancel a batch"):
        await client.batches.cancel(batch.id)


async def test_batches_are_listed_newest_first_a_page_at_a_time(
    start: Start, manual_clock: ManualClock
) -> None:
    _, client = await start()
    made = [(await submit(client, [line(i)], metadata={"n": str(i)})).id for i in range(5)]
    page = await client.batches.list(limit=2)
    assert [b.id for b in page.data] == made[:-3:-1] and page.has_more
    rest = await client.batches.list(limit=10, after=page.data[-1].id)
    assert [b.id for b in rest.data] == made[2::-1] and not rest.has_more


async def test_files_are_listed_read_and_deleted(start: Start, manual_clock: ManualClock) -> None:
    sim, client = await start()
    file = await client.files.create(
        file=("a.jsonl", io.BytesIO(jsonl([line(1)]))), purpose="batch"
    )
    assert (await client.files.retrieve(file.id)).filename == "a.jsonl"
    assert [f.id for f in (await client.files.list(purpose="batch")).data] == [file.id]
    assert (await client.files.delete(file.id)).deleted
    with pytest.raises(openai.NotFoundError):
        await client.files.retrieve(file.id)
    assert sim.stats()["batch"]["files_uploaded"] == 1


@pytest.mark.parametrize(
    ("style", "status", "fragment"),
    [
        ("llamacpp", 404, b'"File Not Found"'),
        ("vllm", 404, b'{"detail":"Not Found"}'),
        ("new-api", 501, b'"code":"api_not_implemented"'),
        ("litellm", 500, b'"Connection error."'),
    ],
)
async def test_servers_without_a_batch_api_answer_as_they_do(
    simulator_factory: SimulatorFactory,
    http: aiohttp.ClientSession,
    style: str,
    status: int,
    fragment: bytes,
) -> None:
    sim = await simulator_factory(batch={"api": style})
    reply = await get(http, sim.base_url + "/batches?limit=1")
    assert reply.status == status and fragment in reply.raw
    form = aiohttp.FormData({"purpose": "batch"})
    form.add_field("file", b"{}\n", filename="x.jsonl")
    async with http.post(sim.base_url + "/files", data=form) as upload:
        body = await upload.read()
    assert upload.status == status
    if style == "litellm":  # the upload says what is missing
        assert b"files_settings is not set" in body


async def test_the_batch_api_checks_the_key(
    simulator_factory: SimulatorFactory, http: aiohttp.ClientSession
) -> None:
    sim = await simulator_factory(api_key="sk-right")
    assert (await get(http, sim.base_url + "/batches")).status == 401
    ok = await get(http, sim.base_url + "/batches", {"Authorization": "Bearer sk-right"})
    assert ok.status == 200 and ok.json["data"] == []
