"""Batch mode meets endpoints without a Batch API, or a refused key: a plain message, a
documented exit code, and nothing written that a later run would trip on."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchchat.errors import BatchAPIError, BatchUnsupportedError
from batchchat.models import ExitCode
from batchchat.runner import run_job
from tests.batchapi._jobs import batch_spec
from tests.conftest import SimulatorFactory


@pytest.mark.parametrize(
    ("style", "error", "code"),
    [
        ("new-api", BatchUnsupportedError, ExitCode.INVALID),
        ("llamacpp", BatchUnsupportedError, ExitCode.INVALID),
        ("vllm", BatchUnsupportedError, ExitCode.INVALID),
        ("litellm", BatchAPIError, ExitCode.FAILED),
    ],
)
async def test_an_endpoint_without_a_batch_api_is_told_before_anything_is_written(
    simulator_factory: SimulatorFactory, tmp_path: Path, style: str, error: type, code: int
) -> None:
    server = await simulator_factory(batch={"api": style})
    spec = batch_spec(tmp_path, server.base_url, rows=5)
    with pytest.raises(error) as info:
        await run_job(spec)
    assert info.value.exit_code == code
    assert "online mode" in str(info.value)
    assert not spec.output_dir.exists()
    assert server.stats()["requests"] == 0  # no row was sent
    online = batch_spec(tmp_path, server.base_url, rows=5, mode="online")
    assert (await run_job(online)).exit_code == ExitCode.OK  # nothing to trip on


async def test_a_refused_key_stops_the_batch_run_before_anything_is_written(
    simulator_factory: SimulatorFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await simulator_factory(api_key="sk-right-key")
    monkeypatch.setenv("BATCH_TEST_KEY", "sk-wrong-key")
    spec = batch_spec(tmp_path, server.base_url, rows=5, endpoint={"api_key_env": "BATCH_TEST_KEY"})
    with pytest.raises(BatchAPIError, match="refused the key for the Batch API") as info:
        await run_job(spec)
    assert info.value.exit_code == ExitCode.FAILED
    assert "sk-wrong-key" not in str(info.value)
    assert not spec.output_dir.exists()
