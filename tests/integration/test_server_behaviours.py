"""Whole runs against the simulator rehearsing what real servers do (LiteLLM, llama.cpp).

Each test turns on the simulator knob that mirrors a behaviour seen on a server nobody
here wrote (``../shared/realserver``: the same runs against the real ones live in
``tests/realserver``), and checks the run as a user would: exit code, rows, answers.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest

import batchchat
from batchchat.runner import run_job
from batchchat.spec import JobSpec, load_spec
from tests._specs import merge_sections
from tests.conftest import SimulatorFactory


def write_rows(folder: Path, count: int) -> Path:
    rows = (orjson.dumps({"id": f"r{i:03d}", "text": f"review {i}"}) for i in range(count))
    path = folder / "rows.jsonl"
    path.write_bytes(b"\n".join(rows) + b"\n")
    return path


def job(folder: Path, base_url: str, rows: int, **extra: Any) -> JobSpec:
    spec: dict[str, Any] = {
        "name": "t",
        "input": {"path": str(write_rows(folder, rows)), "id_column": "id"},
        "endpoint": {"base_url": base_url, "timeout_s": 10},
        "request": {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "{{ text }}"}],
            "max_tokens": 8,
        },
        "output": {"path": str(folder / "out")},
    }
    merge_sections(spec, extra)
    return load_spec(spec)


async def test_a_gateways_calendar_windows_are_learned_without_a_limit_in_the_spec(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    # LiteLLM with rpm 11 admits 10 a window and answers the rest 429 with only
    # llm_provider-retry-after; its windows here last 2 s instead of a minute
    window, per_window, rows = 2.0, 10, 40
    sim = await simulator_factory(rate_limit_style="gateway", rpm=11, gateway_window_s=window)
    spec = job(tmp_path, sim.base_url, rows)
    # start early in a window, as a long job's every window after its first: a 429's
    # advice (a whole window) then ends right after the window the job is waiting for
    await asyncio.sleep(window - time.time() % window + 0.05)
    started, wall0 = time.monotonic(), time.time()
    outcome = await run_job(spec)
    elapsed = time.monotonic() - started
    df = batchchat.read_results(spec.output_dir)
    assert outcome.exit_code == 0
    assert df.height == rows and (df["status"] == "ok").all()
    # the last rows can go at the start of the fourth window
    ideal = (rows // per_window - 1) * window - wall0 % window
    assert elapsed <= 1.1 * ideal + 0.5, (elapsed, ideal)
    # the first window meets every request in flight; after it, one probe per window
    assert sim.stats()["rate_limited"] <= rows - per_window + rows // per_window


async def test_streams_over_a_server_that_closes_kept_alive_connections_need_one_attempt(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    # llama-server closes the connection after a stream while its headers say keep-alive
    sim = await simulator_factory(close_after_stream=True)
    spec = job(tmp_path, sim.base_url, 200, request={"stream": True}, limits={"max_concurrency": 8})
    outcome = await run_job(spec)
    df = batchchat.read_results(spec.output_dir)
    assert outcome.exit_code == 0 and (df["status"] == "ok").all()
    assert df["attempts"].to_list() == [1] * 200  # no row paid for the dead connections
    assert sim.stats()["answered"] == 200
    assert outcome.stats.resent == sim.stats()["closed_on_reuse"]


async def test_a_label_forced_by_a_grammar_is_never_certain(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    # llama-server's top_logprobs come before its grammar: the chosen token is not in them
    sim = await simulator_factory(faults={"forced_token": 1.0})
    spec = job(
        tmp_path,
        sim.base_url,
        30,
        request={
            "messages": [{"role": "user", "content": "{{ text }} Answer with one of: good, bad"}],
            "logprobs": True,
            "top_logprobs": 5,
        },
        output={"labels": ["good", "bad"]},
    )
    outcome = await run_job(spec)
    df = batchchat.read_results(spec.output_dir)
    assert outcome.exit_code == 0
    labelled = df.filter(pl.col("label").is_not_null())
    assert labelled.height > 0
    first = labelled["logprobs"].list.first().struct.field("logprob")
    assert (first < -2).all()  # the forced token: the model gave it little chance
    assert (labelled["label_confidence"] < 0.5).all()


async def test_answers_without_a_choice_are_retried_and_odd_usage_numbers_are_read(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    # gateways seen sending choices: [], a choice without message, and usage as "12" or 12.0
    faults = {
        "empty_choices": 0.1,
        "no_message": 0.1,
        "usage_as_strings": 0.2,
        "usage_as_floats": 0.2,
        "seed": 3,
    }
    sim = await simulator_factory(faults=faults)
    spec = job(tmp_path, sim.base_url, 200, retry={"initial_wait_s": 0.01})
    outcome = await run_job(spec)
    df = batchchat.read_results(spec.output_dir)
    assert outcome.exit_code == 0 and (df["status"] == "ok").all() and df.height == 200
    assert df["content"].null_count() == 0  # no answer without a choice was taken for one
    assert df.schema["prompt_tokens"] == pl.Int64 and df["prompt_tokens"].null_count() == 0
    injected = sim.stats()["faults"]
    assert injected["empty_choices"] + injected["no_message"] == outcome.stats.retries


async def test_a_spec_limit_above_a_gateways_window_does_not_slow_the_run(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    # limits.rpm 3x the gateway's: once the gateway's 200s say its limit is lower, the
    # requests already queued in the spec's bucket go at once and its window governs
    # (seen on LiteLLM: queued requests kept the spec's spacing, 84 s instead of 60)
    window, per_window, rows = 2.0, 10, 20
    sim = await simulator_factory(rate_limit_style="gateway", rpm=11, gateway_window_s=window)
    spec = job(tmp_path, sim.base_url, rows, limits={"rpm": 33})
    await asyncio.sleep(window - time.time() % window + 0.05)
    started = time.monotonic()
    outcome = await run_job(spec)
    elapsed = time.monotonic() - started
    df = batchchat.read_results(spec.output_dir)
    assert outcome.exit_code == 0
    assert df.height == rows and (df["status"] == "ok").all()
    # the spec's bucket alone would space the 20 requests 1.8 s apart (34 s); the
    # gateway's windows take them in two (plus the spec bucket's first interval: it starts
    # full, as a window may hold an earlier run's requests), so three windows at most
    assert elapsed <= 3 * window + 0.5, elapsed
    assert sim.stats()["rate_limited"] <= rows - per_window + rows // per_window


async def test_a_server_down_for_a_day_ends_the_run_quickly(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    # 503 with retry-after 86400: no row can succeed within retry.max_wait_s; each fails
    # at its first attempt and fail-fast ends the run (it used to hold the run for
    # max_wait_s after every row: hours)
    sim = await simulator_factory(faults={"http_503": 1.0, "retry_after_s": 86400})
    spec = job(tmp_path, sim.base_url, 50, limits={"max_concurrency": 1})
    outcome = await asyncio.wait_for(run_job(spec), 60)
    assert outcome.exit_code == 1
    assert outcome.stats.stop_reason.value == "fatal"
    assert sim.stats()["requests"] <= 20  # one attempt per row, until fail-fast
    assert "retry-after" in (outcome.stats.fatal_error or "").lower() or "503" in (
        outcome.stats.fatal_error or ""
    )


def established_to(port: int) -> int:
    """This machine's TCP connections to ``port`` that are established (client side), from
    /proc/net/tcp: what batchchat holds open, whatever the server still thinks."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote_port = int(fields[2].split(":")[1], 16)
        count += remote_port == port and fields[3] == "01"  # 01: ESTABLISHED
    return count


#: how long a connection beyond the limit must stay open to count as kept past its timeout
HELD_S = 1.0


def held_throughout(samples: list[tuple[float, int]], seconds: float) -> int:
    """The most connections that were established in every sample of some ``seconds``."""
    held = 0
    for first, (start, _) in enumerate(samples):
        if start + seconds > samples[-1][0]:
            break
        fewest = samples[first][1]
        for at, count in samples[first:]:
            if at > start + seconds:
                break
            fewest = min(fewest, count)
        held = max(held, fewest)
    return held


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux's /proc/net/tcp")
async def test_timed_out_connections_are_closed_before_their_slot_is_reused(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    # stalls and trickled bodies time out; a slot freed by a timeout must not leave its
    # socket open beside the next one. Counted on the client's side: the simulator keeps
    # a stalled handler (and its socket, in CLOSE-WAIT) after the client has gone
    sim = await simulator_factory(
        faults={"stall": 0.2, "trickle": 0.2, "stall_s": 30, "trickle_interval_s": 0.2}
    )
    port = int(sim.base_url.rsplit(":", 1)[1].split("/")[0])
    spec = job(
        tmp_path,
        sim.base_url,
        60,
        endpoint={"timeout_s": 0.6},
        limits={"max_concurrency": 4},
        retry={"max_attempts": 2, "initial_wait_s": 0.01, "max_wait_s": 0.05},
    )
    samples: list[tuple[float, int]] = []  # (monotonic time, connections established)
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            samples.append((time.monotonic(), established_to(port)))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        outcome = await run_job(spec)
    finally:
        done.set()
        watcher.join()
    assert outcome.stats.results_ok + outcome.stats.results_error == 60
    assert outcome.stats.status_counts.get(0, 0) > 0  # some attempts did time out
    peak = max(count for _, count in samples)
    assert peak > 0
    # a stalled socket kept past its timeout would be held 30 s: a dozen at once here, for
    # seconds. More than the limit can show for a moment (longer on a loaded machine):
    # asyncio closes a socket on the loop's next turn, while the freed slot's new connection
    # may already be up on loopback
    assert samples[-1][0] - samples[0][0] > 2 * HELD_S  # the run is long enough to tell
    held = held_throughout(samples, HELD_S)
    assert held <= 4, f"{held} connections open throughout {HELD_S} s (at most {peak} at once)"
