"""The ``mode`` and ``batch:`` keys: defaults, limits, and errors naming file, line and field;
and the patience flex processing is given."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchchat.errors import SpecError
from batchchat.spec import BatchSpec, load_spec
from batchchat.spec.batch import FLEX_RATE_LIMIT_PATIENCE_S, FLEX_TIMEOUT_S, MAX_BYTES, MAX_LINES

BASE = "input: {path: d.jsonl}\nrequest:\n  model: m\n  messages: [{role: user, content: hi}]\n"


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "job.yaml"
    path.write_text(BASE + text)
    return load_spec(path)


def problems(tmp_path: Path, text: str) -> str:
    with pytest.raises(SpecError) as info:
        load(tmp_path, text)
    return str(info.value)


def test_the_defaults_are_online_mode_and_openais_batch_limits(tmp_path: Path) -> None:
    spec = load(tmp_path, "")
    assert spec.mode == "online"  # type: ignore[attr-defined]
    batch = BatchSpec()
    assert (
        (batch.lines_per_batch, batch.bytes_per_batch)
        == (MAX_LINES, MAX_BYTES)
        == (50_000, 200_000_000)
    )
    assert (batch.completion_window, batch.hours, batch.resubmit_rounds) == ("24h", 24, 3)
    assert batch.max_enqueued_tokens is None and batch.resubmit_finish_reasons == []


def test_a_batch_section_is_read(tmp_path: Path) -> None:
    spec = load(
        tmp_path,
        "mode: batch\nbatch:\n  lines_per_batch: 5000\n  max_enqueued_tokens: 2000000\n"
        "  completion_window: 336h\n  resubmit_finish_reasons: [length]\n"
        "  metadata: {team: data}\n",
    )
    batch = spec.batch  # type: ignore[attr-defined]
    assert (batch.lines_per_batch, batch.max_enqueued_tokens, batch.hours) == (5000, 2_000_000, 336)
    assert batch.resubmit_finish_reasons == ["length"] and batch.metadata == {"team": "data"}


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        ("mode: batched\n", 5, "mode: Input should be 'online' or 'batch'"),
        (
            "batch:\n  lines_per_bach: 5\n",
            6,
            "batch.lines_per_bach: unknown key (did you mean 'lines_per_batch'?)",
        ),
        (
            "batch:\n  lines_per_batch: 0\n",
            6,
            "batch.lines_per_batch: Input should be greater than 0",
        ),
        (
            "batch:\n  completion_window: 1d\n",
            6,
            "batch.completion_window: must be hours such as 24h",
        ),
        ("batch:\n  url: https://x/v1/chat\n", 6, "batch.url: must be a request path"),
        (
            "batch:\n  poll_interval_s: 60\n  max_poll_interval_s: 10\n",
            5,
            "batch: max_poll_interval_s (10) is below poll_interval_s (60)",
        ),
        (
            "batch:\n  metadata: {batchchat_key: x}\n",
            6,
            "batch.metadata: batchchat_key: keys starting with batchchat_",
        ),
    ],
)
def test_batch_errors_name_file_line_and_field(
    tmp_path: Path, text: str, line: int, says: str
) -> None:
    message = problems(tmp_path, text)
    assert f"job.yaml:{line}: {says}" in message


def test_a_batch_job_may_not_stream(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(BASE.replace("model: m", "model: m\n  stream: true") + "mode: batch\n")
    with pytest.raises(SpecError, match=r"job.yaml:6: mode: request.stream is true, but the Batch"):
        load_spec(path)


def test_too_much_metadata_is_refused(tmp_path: Path) -> None:
    pairs = ", ".join(f"k{i}: v" for i in range(15))
    assert "at most 14 pairs" in problems(tmp_path, f"batch:\n  metadata: {{{pairs}}}\n")


def test_flex_gets_a_long_deadline_and_patience_unless_the_spec_sets_them(tmp_path: Path) -> None:
    flex = BASE.replace("model: m", "model: o3\n  service_tier: flex")
    path = tmp_path / "job.yaml"
    path.write_text(flex)
    spec = load_spec(path)
    assert spec.endpoint.timeout_s == FLEX_TIMEOUT_S == 900
    assert spec.retry.rate_limit_patience_s == FLEX_RATE_LIMIT_PATIENCE_S
    path.write_text(flex + "endpoint: {timeout_s: 120}\nretry: {rate_limit_patience_s: 60}\n")
    chosen = load_spec(path)
    assert (chosen.endpoint.timeout_s, chosen.retry.rate_limit_patience_s) == (120, 60)
    plain = load(tmp_path, "")
    assert plain.endpoint.timeout_s == 60  # type: ignore[attr-defined]


def test_a_pool_of_endpoints_is_refused_in_batch_mode(tmp_path: Path) -> None:
    pool = (
        "endpoints:\n  - {name: a, base_url: 'http://a.test/v1'}\n"
        "  - {name: b, base_url: 'http://b.test/v1'}\n"
    )
    message = problems(tmp_path, pool + "mode: batch\n")
    assert "job.yaml:8: mode: endpoints: a pool of endpoints runs online" in message
    assert "endpoint: (one endpoint) with mode: batch" in message
    assert load(tmp_path, pool + "mode: online\n") is not None  # the same pool, online
