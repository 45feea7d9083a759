"""Structured output: a response_format JSON Schema → an Arrow type, and content → a typed value.

With ``output.parse: json`` every ok row's content is parsed into the ``parsed``
column. When the request carries a ``json_schema`` response format, ``parsed`` is
typed from it (objects → struct, arrays → list, string/enum → string, integer →
int64, number → float64, boolean → bool) and each value is validated against the
schema; what cannot be typed (free-form objects, unions, tuples, recursion) is
kept as JSON text. Without a schema ``parsed`` is the content as compact JSON text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa
from jsonschema import exceptions as jsonschema_errors
from jsonschema import validators

from batchchat.errors import SpecError

#: deeper schemas (or recursive $refs) are kept as JSON text below this depth
_MAX_DEPTH = 24
#: how much of a validation message ends up in ``parse_error``
_MAX_ERROR_CHARS = 500
#: a Markdown code fence around the whole answer, which models often add
_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*[ \t]*\r?\n(.*?)\r?\n?\s*```\s*$", re.DOTALL)

Conform = Callable[[Any], Any]


class _Mismatch(ValueError):
    """A parsed value does not have the shape its Arrow type needs."""


def list_of(item: pa.DataType, nullable: bool = True) -> pa.DataType:
    """A list type with Parquet's element name, so it reads back identical to what was written."""
    return pa.list_(pa.field("element", item, nullable=nullable))


@dataclass(frozen=True, slots=True)
class _Node:
    """One schema node: its Arrow type, whether null is allowed, and the value converter."""

    type: pa.DataType
    nullable: bool
    conform: Conform


def _json_text(value: Any) -> Any:
    return None if value is None else orjson.dumps(value).decode()


def _string(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    raise _Mismatch(f"expected a string, got {value!r:.40}")


def _integer(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Mismatch(f"expected an integer, got {value!r:.40}")
    if isinstance(value, float) and not value.is_integer():
        raise _Mismatch(f"expected an integer, got {value!r}")
    return int(value)


def _number(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Mismatch(f"expected a number, got {value!r:.40}")
    return float(value)


def _boolean(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    raise _Mismatch(f"expected a boolean, got {value!r:.40}")


_STRING = _Node(pa.string(), False, _string)
_INTEGER = _Node(pa.int64(), False, _integer)
_NUMBER = _Node(pa.float64(), False, _number)
_BOOLEAN = _Node(pa.bool_(), False, _boolean)
_TEXT = _Node(pa.string(), True, _json_text)
_PRIMITIVES = {"string": _STRING, "integer": _INTEGER, "number": _NUMBER, "boolean": _BOOLEAN}


class _Typer:
    """Walks one JSON Schema (resolving local ``$ref``s) into :class:`_Node` values."""

    def __init__(self, root: Mapping[str, Any]) -> None:
        self._root = root

    def node(self, schema: Any, depth: int = 0) -> _Node:
        if depth > _MAX_DEPTH or not isinstance(schema, Mapping):
            return _TEXT
        if "$ref" in schema:
            return self.node(self._resolve(schema["$ref"]), depth + 1)
        for key in ("anyOf", "oneOf", "allOf"):
            if isinstance(schema.get(key), list):
                return self._union(schema[key], depth)
        types = schema.get("type", _implied_type(schema))
        names = [types] if isinstance(types, str) else list(types or [])
        enum = schema.get("enum")
        nullable = "null" in names or (isinstance(enum, list) and None in enum)
        names = [name for name in names if name != "null"]
        if set(names) == {"integer", "number"}:
            names = ["number"]
        if len(names) != 1:
            return _TEXT
        return _with_nullable(self._typed(names[0], schema, depth), nullable)

    def _typed(self, name: str, schema: Mapping[str, Any], depth: int) -> _Node:
        if name == "object":
            return self._struct(schema, depth)
        if name == "array":
            return self._list(schema, depth)
        return _PRIMITIVES.get(name, _TEXT)

    def _struct(self, schema: Mapping[str, Any], depth: int) -> _Node:
        properties = schema.get("properties")
        if not isinstance(properties, Mapping) or not properties:
            return _TEXT  # a free-form object has no fixed columns
        required = set(schema.get("required") or [])
        fields, converters = [], []
        for name, sub in properties.items():
            child = self.node(sub, depth + 1)
            nullable = child.nullable or name not in required
            fields.append(pa.field(str(name), child.type, nullable=nullable))
            converters.append((str(name), child.conform))

        def conform(value: Any) -> Any:
            if value is None:
                return None
            if not isinstance(value, dict):
                raise _Mismatch(f"expected an object, got {value!r:.40}")
            return {name: convert(value.get(name)) for name, convert in converters}

        return _Node(pa.struct(fields), False, conform)

    def _list(self, schema: Mapping[str, Any], depth: int) -> _Node:
        items = schema.get("items")
        if not isinstance(items, Mapping):
            return _TEXT  # tuples (prefixItems) and untyped arrays
        child = self.node(items, depth + 1)
        convert = child.conform

        def conform(value: Any) -> Any:
            if value is None:
                return None
            if not isinstance(value, list):
                raise _Mismatch(f"expected an array, got {value!r:.40}")
            return [convert(item) for item in value]

        return _Node(list_of(child.type, child.nullable), False, conform)

    def _union(self, branches: list[Any], depth: int) -> _Node:
        typed = [branch for branch in branches if not _is_null_schema(branch)]
        if len(typed) != 1:
            return _TEXT
        return _with_nullable(self.node(typed[0], depth + 1), len(typed) < len(branches))

    def _resolve(self, ref: Any) -> Any:
        if not isinstance(ref, str) or not ref.startswith("#"):
            return None  # remote references are not fetched; the value stays JSON text
        target: Any = self._root
        for part in ref.lstrip("#").strip("/").split("/") if ref != "#" else []:
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, Mapping) or part not in target:
                return None
            target = target[part]
        return target


def _implied_type(schema: Mapping[str, Any]) -> str | list[str] | None:
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    values = schema["enum"] if isinstance(schema.get("enum"), list) else None
    if values is None and "const" in schema:
        values = [schema["const"]]
    if not values:
        return None
    kinds = {_json_kind(value) for value in values} - {"null"}
    if kinds == {"integer", "number"}:
        return "number"
    return kinds.pop() if len(kinds) == 1 else None


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string" if isinstance(value, str) else "json"


def _is_null_schema(schema: Any) -> bool:
    return isinstance(schema, Mapping) and schema.get("type") == "null"


def _with_nullable(node: _Node, nullable: bool) -> _Node:
    return _Node(node.type, node.nullable or nullable, node.conform)


def response_json_schema(request: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The JSON Schema of a request's ``json_schema`` response format, if it has one."""
    response_format = request.get("response_format")
    if not isinstance(response_format, Mapping) or response_format.get("type") != "json_schema":
        return None
    wrapper = response_format.get("json_schema")
    schema = wrapper.get("schema") if isinstance(wrapper, Mapping) else None
    return schema if isinstance(schema, Mapping) else None


class StructuredOutput:
    """Parses content into the ``parsed`` value and says why when it cannot (``parse_error``)."""

    def __init__(self, json_schema: Mapping[str, Any] | None) -> None:
        self._validator: Any = None
        if json_schema is None:
            self.arrow_type: pa.DataType = pa.string()
            self._conform: Conform = _json_text
            return
        cls = validators.validator_for(json_schema)
        try:
            cls.check_schema(json_schema)
        except jsonschema_errors.SchemaError as exc:
            raise SpecError(
                "request.response_format.json_schema.schema is not a valid JSON Schema: "
                f"{exc.message} (at {exc.json_path})"
            ) from None
        self._validator = cls(json_schema)
        node = _Typer(json_schema).node(json_schema)
        self.arrow_type = node.type
        self._conform = node.conform

    def parse(self, content: str | None) -> tuple[Any, str | None]:
        """``(value, None)`` when the content parses (and validates), else ``(None, why)``."""
        value, failure = self.parse_checked(content)
        return value, None if failure is None else failure.message

    def parse_checked(self, content: str | None) -> tuple[Any, ParseFailure | None]:
        """Like :meth:`parse`, with the kind of failure (for re-asks and ``parse_status``)."""
        if content is None or not content.strip():
            return None, ParseFailure("no_content", "the response has no content to parse")
        fenced = _FENCE.match(content)
        try:
            value = orjson.loads(fenced.group(1) if fenced else content)
        except orjson.JSONDecodeError as exc:
            return None, ParseFailure("invalid_json", f"content is not valid JSON: {exc}")
        if self._validator is not None:
            error = jsonschema_errors.best_match(self._validator.iter_errors(value))
            if error is not None:
                where = f"content does not match the schema at {error.json_path}"
                return None, ParseFailure("schema_mismatch", _clip(f"{where}: {error.message}"))
        try:
            return self._conform(value), None
        except _Mismatch as exc:
            why = f"content does not fit the parsed column's type: {exc}"
            return None, ParseFailure("schema_mismatch", _clip(why))


@dataclass(frozen=True, slots=True)
class ParseFailure:
    """Why content did not parse: ``no_content``, ``invalid_json`` or ``schema_mismatch``."""

    kind: str
    message: str


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"
