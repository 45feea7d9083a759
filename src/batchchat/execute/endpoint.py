"""Where requests go: the URL and headers of the endpoint, or the built-in simulator.

Secrets are resolved here and nowhere else: the key is read from the
environment variable the spec names, put into the Authorization header, and
never stored on any value that is logged, reported or written to disk.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from batchchat.errors import SpecError
from batchchat.spec import EndpointSpec, SimulatorSpec

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Target:
    """A resolved endpoint: the chat/completions URL and the headers to send."""

    url: str
    headers: Mapping[str, str]
    #: what to show people: the URL without any credentials
    display: str

    def __repr__(self) -> str:  # never show header values: they hold the key
        return f"Target(url={self.url!r})"


def chat_completions_url(base_url: str) -> str:
    """``https://host/v1`` → ``https://host/v1/chat/completions`` (already-full URLs kept)."""
    base = base_url.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    return f"{base}/chat/completions"


def resolve_headers(
    endpoint: EndpointSpec, environ: Mapping[str, str] | None = None, *, where: str = "endpoint"
) -> dict[str, str]:
    """The request headers: JSON content type, bearer key from the named variable, extras
    (``where`` names the endpoint in errors: ``endpoint``, or ``endpoints[name]``)."""
    env = os.environ if environ is None else environ
    headers = {"Content-Type": "application/json"}
    if endpoint.api_key_env:
        key = env.get(endpoint.api_key_env)
        if not key:
            raise SpecError(
                f"No API key found: the job reads it from ${endpoint.api_key_env} "
                f"({where}.api_key_env), which is not set. Set it with "
                f"`export {endpoint.api_key_env}=...`, or use `base_url: simulator` to try the "
                f"job without a key."
            )
        headers["Authorization"] = f"Bearer {key}"
    for name, value in endpoint.headers.items():
        headers[name] = _expand(value, name, env, where)
    return headers


def secret_values(
    endpoint: EndpointSpec, environ: Mapping[str, str] | None = None
) -> frozenset[str]:
    """Every secret a run sends: the key, each ``${VAR}`` value in a header, a literal value
    of a header named like a secret, the simulator's key (to be masked wherever they show)."""
    env = os.environ if environ is None else environ
    found = set()
    if endpoint.api_key_env and env.get(endpoint.api_key_env):
        found.add(env[endpoint.api_key_env])
    for value in endpoint.headers.values():
        found.update(env[name] for name in _ENV_REFERENCE.findall(value) if env.get(name))
    for name in endpoint.literal_secret_headers():
        found.add(endpoint.headers[name].removeprefix("Bearer ").strip())
    if endpoint.simulator is not None and endpoint.simulator.api_key:
        found.add(endpoint.simulator.api_key)
    return frozenset(found)


def _expand(value: str, header: str, env: Mapping[str, str], where: str) -> str:
    return _ENV_REFERENCE.sub(lambda match: _env_value(match.group(1), header, env, where), value)


def _env_value(variable: str, header: str, env: Mapping[str, str], where: str) -> str:
    value = env.get(variable)
    if value is None:
        raise SpecError(
            f"{where}.headers.{header} uses ${{{variable}}}, which is not set in the environment"
        )
    return value


@asynccontextmanager
async def open_target(
    endpoint: EndpointSpec, *, force_simulator: bool = False
) -> AsyncIterator[Target]:
    """Yield the target of a run; start the built-in simulator in-process when asked for."""
    if endpoint.is_simulator or force_simulator:
        from batchchat.simulator import SimulatorServer

        config = endpoint.simulator or SimulatorSpec()
        async with SimulatorServer(config) as simulator:
            headers = {"Content-Type": "application/json"}
            if config.api_key:
                headers["Authorization"] = f"Bearer {config.api_key}"
            url = chat_completions_url(simulator.base_url)
            yield Target(url=url, headers=headers, display=f"simulator at {simulator.base_url}")
        return
    url = chat_completions_url(endpoint.base_url)
    yield Target(url=url, headers=resolve_headers(endpoint), display=_without_credentials(url))


def _without_credentials(url: str) -> str:
    return re.sub(r"//[^/@]+@", "//", url)
