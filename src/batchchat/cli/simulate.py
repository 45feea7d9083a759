"""``batchchat simulate``: serve the built-in OpenAI-compatible simulator until interrupted."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from batchchat.cli._common import reports_errors
from batchchat.cli._docs import docs_epilog
from batchchat.spec import SimulatorSpec

#: fault flag → FaultSpec field
_FAULT_FLAGS = {
    "fail_500": "http_500",
    "fail_502": "http_502",
    "fail_503": "http_503",
    "fail_429": "http_429",
    "drop": "drop",
    "truncate": "truncate",
    "stall": "stall",
    "stream_error": "stream_error",
    "forced_token": "forced_token",
    "usage_as_strings": "usage_as_strings",
    "usage_as_floats": "usage_as_floats",
    "empty_choices": "empty_choices",
    "no_message": "no_message",
    "trickle": "trickle",
    "invalid_json": "invalid_json",
    "schema_mismatch": "schema_mismatch",
    "off_label": "off_label",
}
#: flags that set a SimulatorSpec field of the same name
_TOP_FLAGS = (
    "tokens_per_s",
    "rpm",
    "tpm",
    "prefill",
    "keep_alive_s",
    "rate_limit_style",
    "gateway_window_s",
    "close_after_stream",
    "context_tokens",
    "error_style",
    "auth_error",
)
#: flags that set a FaultSpec field besides the probabilities
_FAULT_KNOBS = {"stall_s": "stall_s", "trickle_interval_s": "trickle_interval_s"}
_FAULT_KNOBS |= {"retry_after_s": "retry_after_s", "fault_seed": "seed"}
#: latency flags → LatencySpec field
_LATENCY_FLAGS = {
    "latency_ms": "mean_ms",
    "latency_distribution": "distribution",
    "jitter_ms": "jitter_ms",
}
#: flags that set a BatchSimSpec field (the Batch API's pace and faults)
_BATCH_FLAGS = {
    "batch_api": "api",
    "batch_time_scale": "time_scale",
    "batch_fail_lines": "fail_lines",
    "batch_expire_lines": "expire_lines",
    "batch_token_limit": "enqueued_token_limit",
}
_PROBABILITY = click.FloatRange(0, 1)


def _fault_option(flag: str, text: str) -> Callable[[Any], Any]:
    return click.option(flag, type=_PROBABILITY, metavar="P", help=f"Probability of {text}.")


@click.command(epilog=docs_epilog("simulate"))
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="Port (0: any free port).",
)
@click.option(
    "--job",
    "job",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Start from this job spec's endpoint.simulator settings; flags override them.",
)
@click.option(
    "--member",
    metavar="NAME",
    help="With --job of a pool: start from that member's simulator settings instead.",
)
@click.option("--latency-ms", type=click.FloatRange(min=0), help="Mean latency before answering.")
@click.option(
    "--latency-distribution",
    type=click.Choice(["fixed", "uniform", "exponential", "lognormal"]),
    help="How the latency varies around its mean.",
)
@click.option(
    "--jitter-ms", type=click.FloatRange(min=0), help="Spread of uniform/lognormal latency."
)
@click.option(
    "--tokens-per-s", type=click.FloatRange(min=0), help="Streaming speed (0: all at once)."
)
@click.option(
    "--rpm",
    type=click.IntRange(min=1),
    help="Requests per minute (a sliding 60 s window; see --rate-limit-style).",
)
@click.option(
    "--tpm", type=click.IntRange(min=1), help="Tokens per minute (prompt + max_tokens × n)."
)
@click.option(
    "--prefill",
    is_flag=True,
    default=None,
    help="Start with both windows full, as in the middle of a long job.",
)
@click.option(
    "--rate-limit-style",
    type=click.Choice(["openai", "gateway"]),
    help="openai: sliding 60 s windows; gateway: LiteLLM's calendar minutes (rpm - 1 admitted), "
    "headers and 429s.",
)
@click.option(
    "--gateway-window-s",
    type=click.FloatRange(min=0, min_open=True),
    help="The gateway style's window in seconds (default 60, a calendar minute).",
)
@click.option(
    "--close-after-stream",
    is_flag=True,
    default=None,
    help="Close the kept-alive connection after each streamed response, as llama-server does.",
)
@click.option(
    "--context-tokens",
    type=click.IntRange(min=1),
    help="Context window in tokens; larger requests get a 400 (see --error-style).",
)
@click.option(
    "--error-style",
    type=click.Choice(["openai", "llamacpp"]),
    help="Word the context-overflow 400 like OpenAI or like llama-server.",
)
@click.option(
    "--auth-error",
    type=click.Choice(["openai", "litellm"]),
    help="Refuse a wrong key like OpenAI (401) or like a LiteLLM proxy without its database "
    "(400 'No connected db.').",
)
@click.option(
    "--api-key-env",
    metavar="NAME",
    help="Require 'Authorization: Bearer <key>' with the key in this environment variable.",
)
@_fault_option("--fail-500", "a 500 response")
@_fault_option("--fail-502", "a 502 response")
@_fault_option("--fail-503", "a 503 response")
@_fault_option("--fail-429", "a 429 without rate-limit headers")
@_fault_option("--drop", "closing the connection without a response")
@_fault_option("--truncate", "a body cut off halfway")
@_fault_option("--stall", "sending nothing for --stall-s, then closing")
@_fault_option("--stream-error", "an error event inside a 200 stream")
@_fault_option("--forced-token", "a first token missing from its top_logprobs (with logprobs)")
@_fault_option("--usage-as-strings", 'a 200 whose usage has "prompt_tokens": "12"')
@_fault_option("--usage-as-floats", 'a 200 whose usage has "prompt_tokens": 12.0')
@_fault_option("--empty-choices", 'a 200 with "choices": []')
@_fault_option("--no-message", "a 200 whose choices lack message (streams: delta)")
@_fault_option("--trickle", "a body sent a byte per --trickle-interval-s")
@_fault_option("--invalid-json", "an answer in a JSON response format that is not valid JSON")
@_fault_option("--schema-mismatch", "a JSON answer that breaks the request's json_schema")
@_fault_option("--off-label", "an answer that is none of the prompt's labels")
@click.option("--stall-s", type=click.FloatRange(min=0, min_open=True), help="Length of a stall.")
@click.option(
    "--trickle-interval-s",
    type=click.FloatRange(min=0, min_open=True),
    help="Pause between the bytes of a trickled body.",
)
@click.option(
    "--retry-after-s",
    type=click.FloatRange(min=0),
    help="Send 'retry-after: S' with the injected 500/502/503.",
)
@click.option("--fault-seed", type=int, help="Seed of the fault draws (same seed, same faults).")
@click.option(
    "--batch-api",
    type=click.Choice(["openai", "llamacpp", "vllm", "new-api", "litellm"]),
    help="Serve the Batch API (openai), or answer /v1/files and /v1/batches as a server "
    "without one does.",
)
@click.option(
    "--batch-time-scale",
    type=click.FloatRange(min=0, min_open=True),
    help="Simulated Batch API seconds per real second (86400: a day in a second).",
)
@_fault_option("--batch-fail-lines", "a batch line failing (429, in the error file)")
@_fault_option("--batch-expire-lines", "a batch line expiring (its batch ends expired)")
@click.option(
    "--batch-token-limit",
    type=click.IntRange(min=1),
    help="Enqueued prompt tokens per model; a batch past it fails token_limit_exceeded.",
)
@click.option(
    "--keep-alive-s",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds between ': keep-alive' lines in slow streams.",
)
@reports_errors
def simulate(host: str, port: int, job: Path | None, member: str | None, **options: Any) -> None:
    """Serve a local OpenAI-compatible Chat Completions API (no key, no network, no cost).

    \b
    Prints the base URL, then serves until Ctrl-C:
      batchchat simulate --port 8080 --rpm 600 --fail-500 0.01
      curl http://127.0.0.1:8080/v1/chat/completions -H 'content-type: application/json' \\
        -d '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'
    GET /stats shows what was served.
    """
    base = SimulatorSpec()
    if job is not None:
        base = _job_simulator(job, member) or base
    elif member is not None:
        raise click.BadParameter("names a pool member: give --job too", param_hint="--member")
    spec = build_spec(base, options)
    with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C while shutting down
        asyncio.run(_serve(spec, host, port))


def _job_simulator(job: Path, member: str | None) -> SimulatorSpec | None:
    """The simulator settings of the job's endpoint, or of one member of its pool."""
    from batchchat.spec import load_spec

    spec = load_spec(job)
    if member is None:
        return spec.endpoint.simulator
    names = {m.name: m for m in spec.endpoints or []}
    if member not in names:
        known = ", ".join(names) or "none: the job has no endpoints: pool"
        raise click.BadParameter(f"{member!r} is not a member of {job}'s pool ({known})")
    return names[member].simulator


def build_spec(base: SimulatorSpec, options: dict[str, Any]) -> SimulatorSpec:
    """``base`` with every flag that was given applied (flags left out keep ``base``'s value)."""
    data = base.model_dump()
    given = {key: value for key, value in options.items() if value is not None}
    latency = data["latency"]
    for flag, field in _LATENCY_FLAGS.items():
        if flag in given:
            latency[field] = given[flag]
    for flag in _TOP_FLAGS:
        if flag in given:
            data[flag] = given[flag]
    for flag, field in (*_FAULT_FLAGS.items(), *_FAULT_KNOBS.items()):
        if flag in given:
            data["faults"][field] = given[flag]
    for flag, field in _BATCH_FLAGS.items():
        if flag in given:
            data["batch"][field] = given[flag]
    if "api_key_env" in given:
        data["api_key"] = _read_key(given["api_key_env"])
    return SimulatorSpec.model_validate(data)


def spec_keys() -> dict[str, str]:
    """Each flag (by parameter name) → the key under ``endpoint.simulator`` that it sets."""
    keys = {flag: f"latency.{field}" for flag, field in _LATENCY_FLAGS.items()}
    keys |= {flag: flag for flag in _TOP_FLAGS}
    faults = {**_FAULT_FLAGS, **_FAULT_KNOBS}
    keys |= {flag: f"faults.{field}" for flag, field in faults.items()}
    keys |= {flag: f"batch.{field}" for flag, field in _BATCH_FLAGS.items()}
    keys["api_key_env"] = "api_key"
    return keys


def _read_key(name: str) -> str:
    key = os.environ.get(name)
    if not key:
        raise click.BadParameter(
            f"the environment variable {name} is not set (or empty); "
            f"export {name}=<key> first, or leave --api-key-env out to serve without a key",
            param_hint="--api-key-env",
        )
    return key


async def _serve(spec: SimulatorSpec, host: str, port: int) -> None:
    from batchchat.simulator import SimulatorServer

    server = SimulatorServer(spec)
    try:
        base_url = await server.start(host, port)
    except OSError as exc:
        raise click.UsageError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port"
        ) from None
    click.echo(base_url)
    click.echo(f"batchchat simulator serving at {base_url} (Ctrl-C to stop)", err=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await stopping.wait()
    finally:
        await server.stop()
