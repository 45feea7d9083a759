"""`validate`, `plan` and `simulate` with a pool of endpoints: shown in full, keys never."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from batchchat.cli import main
from batchchat.cli.simulate import _job_simulator
from tests.test_runner import write_rows

POOL = """\
input: {path: rows.jsonl, id_column: id}
endpoints:
  - name: local
    base_url: http://127.0.0.1:8000/v1
    limits: {rpm: 600, max_concurrency: 8}
    pricing: {gpt-4o-mini: {input: 0, output: 0}}
  - name: azure
    base_url: https://me:hunter2@example.openai.azure.com/openai/v1
    api_key_env: POOL_AZURE_KEY
    model: {gpt-4o-mini: my-deployment}
    headers: {api-version: "2024-10-21"}
    priority: 2
  - name: rehearsal
    base_url: simulator
    simulator: {rpm: 1200, faults: {http_503: 0.25}}
    priority: 2
    weight: 3
routing: {sticky: prefix}
request:
  model: gpt-4o-mini
  messages: [{role: user, content: "{{ text }}"}]
  max_tokens: 4
limits: {tpm: 100000}
"""


@pytest.fixture
def job(tmp_path: Path) -> Path:
    write_rows(tmp_path / "rows.jsonl", 5)
    path = tmp_path / "pool.yaml"
    path.write_text(POOL)
    return path


def flat(output: str) -> str:
    return " ".join(output.split())


def test_validate_shows_every_member_and_no_key(job: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POOL_AZURE_KEY", "sk-azure-secret-value")
    result = CliRunner().invoke(main, ["validate", str(job)], terminal_width=200)
    assert result.exit_code == 0, result.output
    text = flat(result.output)
    assert "a pool of 3 in 2 tiers (tier 1 first); sticky by prefix" in text
    assert (
        "local http://127.0.0.1:8000/v1; tier 1, weight 1; no key; 600 rpm, 100,000 tpm, "
        "8 concurrent; own prices for gpt-4o-mini" in text
    )
    assert "https://me:***@example.openai.azure.com/openai/v1; tier 2" in text
    assert "key from $POOL_AZURE_KEY (set)" in text
    assert "model gpt-4o-mini → my-deployment" in text and "extra headers: api-version" in text
    assert "rehearsal built-in simulator (rpm 1,200, http_503 25%); tier 2, weight 3" in text
    assert "each endpoint's unless its own: no rpm limit, 100,000 tpm" in text
    assert "sk-azure-secret-value" not in result.output and "hunter2" not in result.output


def test_validate_says_a_members_key_is_not_set(job: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POOL_AZURE_KEY", raising=False)
    result = CliRunner().invoke(main, ["validate", str(job)], terminal_width=200)
    assert result.exit_code == 0
    assert "key from $POOL_AZURE_KEY (NOT set: export it before run)" in flat(result.output)


def test_run_refuses_a_member_whose_key_is_not_set(
    job: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POOL_AZURE_KEY", raising=False)
    result = CliRunner().invoke(main, ["run", str(job)])
    assert result.exit_code == 2
    assert "$POOL_AZURE_KEY (endpoints[azure].api_key_env), which is not set" in flat(result.output)


def test_plan_shows_the_pool_and_the_cost_range_over_its_members(job: Path) -> None:
    result = CliRunner().invoke(main, ["plan", str(job), "--show", "0"], terminal_width=200)
    assert result.exit_code == 0, result.output
    text = flat(result.output)
    assert "gpt-4o-mini via a pool (local, azure, rehearsal)" in text
    assert "local http://127.0.0.1:8000/v1; tier 1" in text and "hunter2" not in text
    assert "cost $0" in text  # the free local member is the low end


def test_simulate_serves_a_pool_members_knobs(job: Path) -> None:
    simulator = _job_simulator(job, "rehearsal")
    assert simulator is not None and simulator.rpm == 1200
    assert simulator.faults.http_503 == 0.25
    result = CliRunner().invoke(main, ["simulate", "--job", str(job), "--member", "nobody"])
    assert result.exit_code == 2
    assert (
        "'nobody' is not a member" in result.output and "local, azure, rehearsal" in result.output
    )
    result = CliRunner().invoke(main, ["simulate", "--member", "local"])
    assert result.exit_code == 2 and "give --job too" in result.output
