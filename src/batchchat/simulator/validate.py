"""Strict validation of a Chat Completions body, with OpenAI's error wording.

A job that passes here should pass a real server: the checks and the error
shape (message, ``param``, ``code``) follow the OpenAI API. Unknown top-level
keys are accepted, as vLLM and most gateways accept vendor extensions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from batchchat.planning.rules import Finding, message_findings

_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_EFFORTS = frozenset({"minimal", "low", "medium", "high"})
MAX_N = 128


class InvalidRequest(ValueError):
    """A request a strict server rejects with 400; it becomes an error body, never propagates."""

    def __init__(self, message: str, param: str | None, code: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


@dataclass(frozen=True, slots=True)
class SimRequest:
    """The parts of a validated request that shape the answer."""

    model: str
    messages: list[dict[str, Any]]
    n: int
    stream: bool
    include_usage: bool
    #: max_completion_tokens, else max_tokens; None when unbounded
    max_tokens: int | None
    stop: tuple[str, ...]
    logprobs: bool
    top_logprobs: int
    #: "text", "json_object" or "json_schema"
    response_format: str
    schema: dict[str, Any] | None
    tools: tuple[dict[str, Any], ...]
    #: "none", "auto", "required", or the name of the function to call
    tool_choice: str
    parallel_tool_calls: bool
    seed: int | None
    reasoning_effort: str | None


def validate_request(body: Any) -> SimRequest:
    """Check ``body`` like a strict server; raise :class:`InvalidRequest` on the first problem."""
    if not isinstance(body, dict):
        raise InvalidRequest(
            "We could not parse the JSON body of your request: expected a JSON object.", None, None
        )
    model = body.get("model")
    if model is None:
        raise InvalidRequest("you must provide a model parameter", "model", None)
    _check_type(model, str, "model")
    messages = _messages(body)
    tools = _tools(body.get("tools"))
    logprobs = _optional(body, "logprobs", bool, False)
    top_logprobs = _int_in(body, "top_logprobs", 0, 20, 0)
    if "top_logprobs" in body and body["top_logprobs"] is not None and not logprobs:
        raise InvalidRequest(
            "Invalid value for 'top_logprobs': 'logprobs' must be set to true when "
            "'top_logprobs' is used.",
            "top_logprobs",
            "invalid_value",
        )
    stream = _optional(body, "stream", bool, False)
    _check_sampling(body)
    response_format, schema = _response_format(body.get("response_format"))
    effort = body.get("reasoning_effort")
    if effort is not None and effort not in _EFFORTS:
        raise _invalid_value(effort, "reasoning_effort", sorted(_EFFORTS))
    seed = body.get("seed")
    if seed is not None:
        _check_type(seed, int, "seed")
    return SimRequest(
        model=model,
        messages=messages,
        n=_int_in(body, "n", 1, MAX_N, 1),
        stream=stream,
        include_usage=_include_usage(body, stream),
        max_tokens=_max_tokens(body),
        stop=_stop(body.get("stop")),
        logprobs=logprobs,
        top_logprobs=top_logprobs,
        response_format=response_format,
        schema=schema,
        tools=tools,
        tool_choice=_tool_choice(body.get("tool_choice"), tools),
        parallel_tool_calls=_optional(body, "parallel_tool_calls", bool, True),
        seed=seed,
        reasoning_effort=effort,
    )


# -- messages -----------------------------------------------------------------------------------


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    if "messages" not in body:
        raise InvalidRequest(
            "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
        )
    messages = body["messages"]
    _check_type(messages, list, "messages")
    if not messages:
        raise InvalidRequest(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            "messages",
            "empty_array",
        )
    for index, message in enumerate(messages):
        _check_message(message, f"messages[{index}]")
    return list(messages)


def _check_message(message: Any, where: str) -> None:
    """Raise OpenAI's 400 for the first message rule ``message`` breaks."""
    for finding in message_findings(message, where):
        raise _invalid(finding)


def _invalid(finding: Finding) -> InvalidRequest:
    where = finding.where
    if finding.kind == "missing":
        return InvalidRequest(
            f"Missing required parameter: '{where}'.", where, "missing_required_parameter"
        )
    if finding.kind == "not_one_of":
        return _invalid_value(finding.value, where, list(finding.expected))
    if finding.kind == "empty":
        return InvalidRequest(
            f"Invalid '{where}': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            where,
            "empty_array",
        )
    expected = finding.expected if isinstance(finding.expected, str) else "valid"
    return _invalid_type(finding.value, expected, where)


# -- sampling and output controls ---------------------------------------------------------------


def _check_sampling(body: dict[str, Any]) -> None:
    for key, low, high in (
        ("temperature", 0.0, 2.0),
        ("top_p", 0.0, 1.0),
        ("presence_penalty", -2.0, 2.0),
        ("frequency_penalty", -2.0, 2.0),
    ):
        value = body.get(key)
        if value is None:
            continue
        if not _is_number(value):
            raise _invalid_type(value, "a number", key)
        if not low <= value <= high:
            raise InvalidRequest(
                f"Invalid '{key}': expected a value between {low:g} and {high:g}, "
                f"but got {value} instead.",
                key,
                "decimal_above_max_value" if value > high else "decimal_below_min_value",
            )


def _max_tokens(body: dict[str, Any]) -> int | None:
    limit = None
    for key in ("max_tokens", "max_completion_tokens"):  # the newer name wins
        value = _int_in(body, key, 1, 10_000_000, None)
        if value is not None:
            limit = value
    return limit


def _stop(stop: Any) -> tuple[str, ...]:
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,) if stop else ()
    _check_type(stop, list, "stop")
    if len(stop) > 4:
        raise InvalidRequest(
            f"Invalid 'stop': array too long. Expected an array with maximum length 4, "
            f"but got an array with length {len(stop)} instead.",
            "stop",
            "array_above_max_length",
        )
    for index, item in enumerate(stop):
        _check_type(item, str, f"stop[{index}]")
    return tuple(item for item in stop if item)


def _include_usage(body: dict[str, Any], stream: bool) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not stream:
        raise InvalidRequest(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
            None,
        )
    _check_type(options, dict, "stream_options")
    return bool(_optional(options, "include_usage", bool, False, "stream_options."))


def _response_format(value: Any) -> tuple[str, dict[str, Any] | None]:
    if value is None:
        return "text", None
    _check_type(value, dict, "response_format")
    kind = value.get("type")
    if kind not in {"text", "json_object", "json_schema"}:
        raise _invalid_value(kind, "response_format.type", ["text", "json_object", "json_schema"])
    if kind != "json_schema":
        return kind, None
    spec = value.get("json_schema")
    if spec is None:
        raise InvalidRequest(
            "Missing required parameter: 'response_format.json_schema'.",
            "response_format.json_schema",
            "missing_required_parameter",
        )
    _check_type(spec, dict, "response_format.json_schema")
    name = spec.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidRequest(
            "Invalid 'response_format.json_schema.name': must be 1-64 characters of "
            "a-z, A-Z, 0-9, underscores and dashes.",
            "response_format.json_schema.name",
            "invalid_value",
        )
    schema = spec.get("schema", {})
    _check_type(schema, dict, "response_format.json_schema.schema")
    return kind, schema


# -- tools --------------------------------------------------------------------------------------


def _tools(tools: Any) -> tuple[dict[str, Any], ...]:
    if tools is None:
        return ()
    _check_type(tools, list, "tools")
    if len(tools) > 128:
        raise InvalidRequest(
            f"Invalid 'tools': array too long. Expected an array with maximum length 128, "
            f"but got an array with length {len(tools)} instead.",
            "tools",
            "array_above_max_length",
        )
    functions = []
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        _check_type(tool, dict, where)
        if tool.get("type") != "function":
            raise _invalid_value(tool.get("type"), f"{where}.type", ["function"])
        function = tool.get("function")
        _check_type(function, dict, f"{where}.function")
        name = function.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidRequest(
                f"Invalid '{where}.function.name': string does not match pattern. "
                "Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
                f"{where}.function.name",
                "invalid_value",
            )
        if "parameters" in function:
            _check_type(function["parameters"], dict, f"{where}.function.parameters")
        functions.append(function)
    return tuple(functions)


def _tool_choice(choice: Any, tools: tuple[dict[str, Any], ...]) -> str:
    if choice is None:
        return "auto" if tools else "none"
    if not tools:
        raise InvalidRequest(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' "
            "are specified.",
            "tool_choice",
            None,
        )
    if isinstance(choice, str):
        if choice not in {"none", "auto", "required"}:
            raise _invalid_value(choice, "tool_choice", ["none", "auto", "required"])
        return choice
    _check_type(choice, dict, "tool_choice")
    function = choice.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    if choice.get("type") != "function" or not isinstance(name, str):
        raise InvalidRequest(
            "Invalid 'tool_choice': expected {'type': 'function', 'function': {'name': ...}}.",
            "tool_choice",
            "invalid_value",
        )
    if all(tool["name"] != name for tool in tools):
        raise InvalidRequest(
            f"Invalid value for 'tool_choice': no function named '{name}' was specified "
            "in the 'tools' parameter.",
            "tool_choice",
            None,
        )
    return name


# -- small checks -------------------------------------------------------------------------------

_TYPE_WORDS = {
    str: "a string",
    int: "an integer",
    bool: "a boolean",
    list: "an array",
    dict: "an object",
}


def _check_type(value: Any, expected: type, param: str) -> None:
    # bool is an int in Python, never in JSON
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise _invalid_type(value, _TYPE_WORDS[expected], param)


def _optional(
    body: dict[str, Any], key: str, expected: type, default: Any, prefix: str = ""
) -> Any:
    value = body.get(key)
    if value is None:
        return default
    _check_type(value, expected, prefix + key)
    return value


def _int_in(body: dict[str, Any], key: str, low: int, high: int, default: Any) -> Any:
    value = body.get(key)
    if value is None:
        return default
    _check_type(value, int, key)
    if value < low:
        raise InvalidRequest(
            f"Invalid '{key}': integer below minimum value. Expected a value >= {low}, "
            f"but got {value} instead.",
            key,
            "integer_below_min_value",
        )
    if value > high:
        raise InvalidRequest(
            f"Invalid '{key}': integer above maximum value. Expected a value <= {high}, "
            f"but got {value} instead.",
            key,
            "integer_above_max_value",
        )
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _invalid_type(value: Any, expected: str, param: str) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid type for '{param}': expected {expected}, but got {_json_kind(value)} instead.",
        param,
        "invalid_type",
    )


def _invalid_value(value: Any, param: str, allowed: list[str]) -> InvalidRequest:
    listed = ", ".join(f"'{item}'" for item in allowed)
    shown = str(value)[:64]  # never echo a long value back
    return InvalidRequest(
        f"Invalid value: '{shown}'. Supported values are: {listed}.", param, "invalid_value"
    )
