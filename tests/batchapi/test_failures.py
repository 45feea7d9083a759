"""Batch API calls that fail mid-run: a refused create, a batch the provider forgot, an upload
refused as by a server without a Batch API, polls that keep failing. Over HTTP to the
simulator where it can misbehave so, through the transport seam where it cannot."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from batchchat.batchapi.client import BatchClient
from batchchat.batchapi.collect import BatchRun
from batchchat.batchapi.executor import execute_batches
from batchchat.batchapi.state import load_state
from batchchat.errors import BatchAPIError, BatchUnsupportedError
from batchchat.execute.transport import HTTPRequest, HTTPResponse, MockTransport
from batchchat.job import compile_job
from batchchat.models import ChatResult, ExecutionStats, ExitCode, StopReason
from batchchat.results.layout import OutputLayout
from batchchat.runner import RunOptions, run_job
from batchchat.spec import RetrySpec
from tests.batchapi._jobs import batch_spec
from tests.conftest import SimulatorFactory

RETRY = RetrySpec(max_attempts=3, initial_wait_s=0.001, max_wait_s=0.002)


async def test_a_create_the_provider_refuses_stops_the_run_in_its_words(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    server = await simulator_factory(batch={"time_scale": 3000})
    spec = batch_spec(tmp_path, server.base_url, rows=5, batch={"completion_window": "400h"})
    with pytest.raises(BatchAPIError, match="Invalid 'completion_window'") as info:
        await run_job(spec)
    assert info.value.exit_code == ExitCode.FAILED
    shard = load_state(OutputLayout(spec.output_dir)).shards[0]
    assert shard.phase == "uploaded" and shard.batch_id is None  # created by no one: tried again
    assert server.stats()["batch"]["batches_created"] == 0


async def test_a_batch_the_provider_no_longer_knows_is_sent_again(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    server = await simulator_factory(batch={"time_scale": 3000})
    spec = batch_spec(tmp_path, server.base_url, rows=8)
    assert (await run_job(spec, RunOptions(wait=False))).exit_code == ExitCode.PENDING
    layout = OutputLayout(spec.output_dir)
    state = orjson.loads(layout.batch_state.read_bytes())
    state["shards"][0]["batch_id"] = "batch_forgotten"
    layout.batch_state.write_bytes(orjson.dumps(state))
    outcome = await run_job(spec)
    assert outcome.exit_code == ExitCode.OK and outcome.report.rows_ok == 8
    first, again = load_state(layout).shards
    assert first.status == "lost" and again.parent == first.id and again.lines == 8


def batch_run(tmp_path: Path, handler: object, rows: int = 4) -> tuple[BatchRun, list[object]]:
    """A batch run over the transport seam (``handler`` is the network)."""
    spec = batch_spec(tmp_path, "http://provider.invalid/v1", rows=rows)
    job = compile_job(spec, require_key=False)
    client = BatchClient(
        MockTransport(handler),  # type: ignore[arg-type]
        "http://provider.invalid/v1",
        {},
        retry=spec.retry,
        display="provider",
        sleep=lambda _: asyncio.sleep(0),
    )
    written: list[ChatResult] = []
    layout = OutputLayout(spec.output_dir)
    keep = {"text": job.plan.source.schema["text"]}
    stats = ExecutionStats("r", started_at=datetime.now(UTC))
    run = BatchRun(
        layout, load_state(layout), spec.batch, client, job.prices, keep, False,
        written.append, lambda: None, stats,
    )  # fmt: skip
    return run, list(job.plan.requests())


async def test_an_upload_refused_as_by_a_server_without_batches_hands_every_shard_back(
    tmp_path: Path,
) -> None:
    def gateway(request: HTTPRequest) -> HTTPResponse:
        body = {"error": {"message": "API not implemented", "code": "api_not_implemented"}}
        return HTTPResponse(501, {}, orjson.dumps(body))

    run, requests = batch_run(tmp_path, gateway)
    with pytest.raises(BatchUnsupportedError, match="refused the Batch API") as info:
        await execute_batches(
            run, requests, on_oversize=print, wait=True, stop=asyncio.Event(), retry=RETRY
        )
    assert "mode: online" in str(info.value)
    state = load_state(run.layout)
    assert [shard.phase for shard in state.shards] == ["released"]
    assert not run.layout.batch_input(state.shards[0].id).exists()


async def test_polls_that_keep_failing_end_the_run_with_the_batch_still_known(
    tmp_path: Path,
) -> None:
    def provider(request: HTTPRequest) -> HTTPResponse:
        if request.method == "POST" and request.url.endswith("/files"):
            return HTTPResponse(200, {}, b'{"id": "file-1"}')
        if request.method == "POST" and request.url.endswith("/batches"):
            return HTTPResponse(200, {}, b'{"id": "batch_1", "status": "validating"}')
        return HTTPResponse(500, {}, b'{"error": {"message": "down"}}')

    run, requests = batch_run(tmp_path, provider)
    stop = asyncio.Event()
    reason = await execute_batches(
        run, requests, on_oversize=print, wait=False, stop=stop, retry=RETRY
    )
    assert reason == StopReason.PENDING
    with pytest.raises(BatchAPIError, match=r"GET /batches/batch_1 failed \(3 tries\): HTTP 500"):
        await execute_batches(run, [], on_oversize=print, wait=False, stop=stop, retry=RETRY)
    assert load_state(run.layout).shards[0].batch_id == "batch_1"
