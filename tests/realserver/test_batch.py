"""Batch mode against servers that run no batches for these models: llama-server has no
``/v1/files`` or ``/v1/batches`` (404 on every unknown path), and the LiteLLM proxy has no
``files_settings`` and no reachable upstream (500s; a wrong key is a 400 without its
database). Each must end in a plain message naming the cause and pointing to online mode
or ``plan --out``, with its documented exit code, and nothing written that a later run
trips on. The simulator's ``batch.api`` switch answers the same way: checked here too.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from batchchat.simulator import SimulatorServer
from batchchat.spec import SimulatorSpec
from tests.realserver._jobs import job_spec as online_spec
from tests.realserver._jobs import prompts, run, write_input
from tests.realserver._servers import LITELLM_KEY, Server

pytestmark = pytest.mark.realserver


#: a valid Batch API input line (LiteLLM checks the lines before anything else)
LINE = {
    "custom_id": "r0#0",
    "method": "POST",
    "url": "/v1/chat/completions",
    "body": {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]},
}


async def _answers(base_url: str, key: str | None) -> dict[str, tuple[int, Any]]:
    """What ``GET /batches`` and an upload to ``POST /files`` get: (status, JSON body)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    found: dict[str, tuple[int, Any]] = {}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.get(base_url + "/batches?limit=1") as response:
            found["list"] = (response.status, await response.json(content_type=None))
        form = aiohttp.FormData({"purpose": "batch"})
        form.add_field("file", orjson.dumps(LINE) + b"\n", filename="in.jsonl")
        async with session.post(base_url + "/files", data=form) as response:
            found["upload"] = (response.status, await response.json(content_type=None))
    return found


def answers(base_url: str, key: str | None = None) -> dict[str, tuple[int, Any]]:
    return asyncio.run(_answers(base_url, key))


def simulated(style: str, key: str | None = None) -> dict[str, tuple[int, Any]]:
    async def ask() -> dict[str, tuple[int, Any]]:
        config = SimulatorSpec.model_validate({"batch": {"api": style}, "api_key": LITELLM_KEY})
        async with SimulatorServer(config) as sim:
            return await _answers(sim.base_url, key)

    return asyncio.run(ask())


def batch_job(server: Server, folder: Path) -> dict[str, Any]:
    return online_spec(server, write_input(folder, prompts(3)), mode="batch")


def test_llama_server_has_no_batch_api_and_the_simulator_says_so_alike(llama: Server) -> None:
    real = answers(llama.base_url)
    assert real["list"] == (
        404,
        {"error": {"message": "File Not Found", "type": "not_found_error", "code": 404}},
    )
    assert real["upload"] == real["list"]
    assert simulated("llamacpp", LITELLM_KEY) == real


def test_litellm_without_files_settings_and_the_simulator_answer_alike(litellm: Server) -> None:
    real = answers(litellm.base_url, LITELLM_KEY)
    assert real["list"][0] == 500 and real["list"][1]["error"]["message"] == "Connection error."
    assert real["upload"][0] == 500
    assert "files_settings is not set" in real["upload"][1]["error"]["message"]
    assert simulated("litellm", LITELLM_KEY) == real
    wrong = answers(litellm.base_url, "sk-wrong")
    assert wrong["list"][0] == 400 and wrong["list"][1]["error"]["type"] == "no_db_connection"
    assert simulated("litellm", "sk-wrong") == wrong


def test_batch_mode_on_llama_server_exits_2_saying_why_and_writes_nothing(
    llama: Server, tmp_path: Path
) -> None:
    spec = batch_job(llama, tmp_path)
    result = run(tmp_path, spec)
    assert result.code == 2, result.out
    text = " ".join(result.out.split())
    assert (
        "runs no Batch API jobs: GET /batches answered HTTP 404 not_found_error: File Not Found"
        in text
    )
    assert "mode: online" in text and "batchchat plan JOB.yaml --out" in text
    assert not (tmp_path / "out").exists()
    online = run(tmp_path, {**spec, "mode": "online"})  # nothing for a later run to trip on
    assert online.code == 0, online.out


def test_batch_mode_on_litellm_exits_1_saying_why_and_writes_nothing(
    litellm: Server, tmp_path: Path
) -> None:
    spec = batch_job(litellm, tmp_path)
    result = run(tmp_path, spec, key=LITELLM_KEY)
    assert result.code == 1, result.out
    text = " ".join(result.out.split())
    assert "did not answer like a Batch API: GET /batches answered HTTP 500" in text
    assert "Connection error" in text and "LiteLLM proxy without files_settings" in text
    assert not (tmp_path / "out").exists()
    wrong = run(tmp_path, spec, key="sk-wrong")
    assert wrong.code == 2 and "No connected db" in wrong.out and "sk-wrong" not in wrong.out
    online = run(tmp_path, {**spec, "mode": "online"}, key=LITELLM_KEY)
    assert online.code == 0, online.out
