"""The error bodies the simulator answers with, worded like OpenAI's. Pure.

Every body is ``{"error": {"message", "type", "param", "code"}}``; the 502
imitates a gateway in front of the API (an integer ``code``), as clients meet
such shapes in the wild. No body ever contains the API key a client sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batchchat.simulator.validate import InvalidRequest

SERVER_ERROR = "The server had an error while processing your request. Sorry about that!"

#: fault kind → (status, error object) of the faults that are plain error responses
FAULT_REPLIES: dict[str, tuple[int, dict[str, Any]]] = {
    "http_500": (
        500,
        {"message": SERVER_ERROR, "type": "server_error", "param": None, "code": None},
    ),
    "http_502": (
        502,
        {"message": "Bad gateway.", "type": "cf_bad_gateway", "param": None, "code": 502},
    ),
    "http_503": (
        503,
        {
            "message": "The server is overloaded or not ready yet.",
            "type": "server_error",
            "param": None,
            "code": None,
        },
    ),
    "http_429": (
        429,
        {
            "message": "Too many requests. Please slow down.",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        },
    ),
}


def error_body(message: str, kind: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def invalid_body(exc: InvalidRequest) -> dict[str, Any]:
    return error_body(exc.message, "invalid_request_error", exc.param, exc.code)


def unparsable_body() -> dict[str, Any]:
    message = (
        "We could not parse the JSON body of your request. (HINT: This likely means you "
        "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)"
    )
    return error_body(message, "invalid_request_error", None, None)


def unauthorized_body() -> dict[str, Any]:
    # never echo the key that was given, not even masked
    message = (
        "Incorrect API key provided. Send the simulator's key as 'Authorization: Bearer <key>'."
    )
    return error_body(message, "invalid_request_error", None, "invalid_api_key")


def key_refusal(style: str, headers: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
    """How a wrong key is refused: OpenAI's 401, or a LiteLLM proxy's without its database
    -- it cannot look a key up, so a wrong one gets 400 ``no_db_connection`` (code "400");
    only a request without any key gets its 401."""
    if style != "litellm":
        return 401, unauthorized_body()
    if "Authorization" in headers:
        return 400, error_body("No connected db.", "no_db_connection", None, "400")
    message = "Authentication Error, No api key passed in."
    return 401, error_body(message, "auth_error", "None", "401")


def not_found_body(method: str, path: str) -> dict[str, Any]:
    return error_body(f"Invalid URL ({method} {path})", "invalid_request_error", None, None)


def fault_reply(
    fault: str, limit_headers: dict[str, str], retry_after_s: float | None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, body and headers of an injected error reply.

    The 429 is the bare kind: no ``retry-after``, no rate-limit headers. The 5xx carry
    the rate-limit headers, and ``retry-after`` when ``retry_after_s`` is set.
    """
    status, error = FAULT_REPLIES[fault]
    if fault == "http_429":
        return status, {"error": error}, {}
    headers = dict(limit_headers)
    if retry_after_s is not None:
        headers["retry-after"] = seconds_text(retry_after_s)
    return status, {"error": error}, headers


def seconds_text(seconds: float) -> str:
    """A ``retry-after`` value: whole seconds as an integer (``2``), else as given (``0.5``)."""
    return str(int(seconds)) if seconds == int(seconds) else str(seconds)
