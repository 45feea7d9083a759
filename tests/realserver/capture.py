"""Record what the real servers send (status, headers, body) as JSON fixtures.

    python -m tests.realserver.capture [NAME ...]     # default: every capture whose server is up

Each capture is one small JSON file in ``captures/`` with lower-cased headers and the body as
text; ``captures/README.md`` says what each one shows. Raw ``http.client``, one connection per
exchange (except ``llama_stream_then_reuse``, which is about reusing one).
"""

from __future__ import annotations

import http.client
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.realserver._servers import LITELLM, LITELLM_KEY, LLAMA, Server, is_up

HERE = Path(__file__).parent / "captures"
PATH = "/v1/chat/completions"
LONG = "weather report "
MESSAGES = [{"role": "user", "content": "Say something about the weather."}]


def _connect(server: Server) -> http.client.HTTPConnection:
    parts = urlsplit(server.root)
    return http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=120)


def exchange(
    conn: http.client.HTTPConnection, body: dict[str, Any], key: str | None = None
) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    conn.request("POST", PATH, body=json.dumps(body), headers=headers)
    resp = conn.getresponse()
    return {
        "request": {"method": "POST", "path": PATH, "body": body},
        "status": resp.status,
        "headers": {k.lower(): v for k, v in resp.getheaders()},
        "body": resp.read().decode("utf-8", "replace"),
    }


def once(server: Server, body: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    conn = _connect(server)
    try:
        return exchange(conn, body, key)
    finally:
        conn.close()


def chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": MESSAGES, "max_tokens": 8, **extra}


def litellm_limited() -> dict[str, Any]:
    """``mock-gpt-limited`` until the first 429: the last 200 and that 429."""
    last_ok: dict[str, Any] = {}
    for _ in range(20):
        got = once(LITELLM, chat("mock-gpt-limited"), LITELLM_KEY)
        if got["status"] != 200:
            return {"last_200": last_ok, "first_429": got}
        last_ok = got
    raise RuntimeError("mock-gpt-limited never answered 429")


def litellm_wrong_key() -> dict[str, Any]:
    return once(LITELLM, chat("mock-gpt"), "sk-wrong-key-0000")


def llama_plain() -> dict[str, Any]:
    return once(LLAMA, chat("tiny", temperature=0, seed=1))


def llama_stream() -> dict[str, Any]:
    body = chat("tiny", temperature=0, stream=True, stream_options={"include_usage": True})
    return once(LLAMA, body)


def llama_context_overflow() -> dict[str, Any]:
    got = once(LLAMA, {"model": "tiny", "messages": [{"role": "user", "content": LONG * 6000}]})
    got["request"]["body"]["messages"][0]["content"] = f"{LONG!r} * 6000"  # keep the file small
    return got


def llama_response_format_jinja() -> dict[str, Any]:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    return once(LLAMA, chat("tiny", response_format=fmt))


def llama_stream_then_reuse() -> dict[str, Any]:
    """A stream, then a second (plain) request on the same connection."""
    conn = _connect(LLAMA)
    try:
        first = exchange(conn, chat("tiny", stream=True))
        try:
            second: dict[str, Any] = exchange(conn, chat("tiny"))
        except (http.client.HTTPException, OSError) as exc:
            second = {"error": f"{type(exc).__name__}: {exc}"}
        return {"stream": first, "second_request_same_connection": second}
    finally:
        conn.close()


def llama_plain_then_reuse() -> dict[str, Any]:
    """The control: two plain requests on one connection."""
    conn = _connect(LLAMA)
    try:
        first = exchange(conn, chat("tiny"))
        try:
            second: dict[str, Any] = exchange(conn, chat("tiny"))
        except (http.client.HTTPException, OSError) as exc:
            second = {"error": f"{type(exc).__name__}: {exc}"}
        return {"plain": first, "second_request_same_connection": second}
    finally:
        conn.close()


CAPTURES: dict[str, tuple[Server, Callable[[], dict[str, Any]]]] = {
    "litellm_limited_200_then_429": (LITELLM, litellm_limited),
    "litellm_wrong_key": (LITELLM, litellm_wrong_key),
    "llama_plain_200": (LLAMA, llama_plain),
    "llama_stream_200": (LLAMA, llama_stream),
    "llama_context_overflow": (LLAMA, llama_context_overflow),
    "llama_response_format_under_jinja": (LLAMA, llama_response_format_jinja),
    "llama_stream_then_reuse": (LLAMA, llama_stream_then_reuse),
    "llama_plain_then_reuse": (LLAMA, llama_plain_then_reuse),
}


def main(names: list[str]) -> None:
    HERE.mkdir(exist_ok=True)
    for name in names or list(CAPTURES):
        server, capture = CAPTURES[name]
        if not is_up(server):
            print(f"skip {name}: {server.name} is down (start: {server.start})")
            continue
        data = capture()
        (HERE / f"{name}.json").write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
        print(f"wrote captures/{name}.json")


if __name__ == "__main__":
    main(sys.argv[1:])
