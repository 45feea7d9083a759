"""JSON Schema → Arrow type, and content → parsed value (a table of cases)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from batchchat.results.structured import StructuredOutput, list_of, response_json_schema

S, INT, F, B = pa.string(), pa.int64(), pa.float64(), pa.bool_()


def struct(*fields: tuple[str, pa.DataType, bool]) -> pa.DataType:
    return pa.struct([pa.field(name, kind, nullable) for name, kind, nullable in fields])


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "string"}, S),
        ({"type": "integer"}, INT),
        ({"type": "number"}, F),
        ({"type": "boolean"}, B),
        ({"enum": ["a", "b"]}, S),
        ({"enum": [1, 2, 3]}, INT),
        ({"enum": [1, 2.5]}, F),
        ({"const": True}, B),
        ({"enum": ["a", 1]}, S),  # mixed: JSON text
        ({"type": ["string", "null"]}, S),
        ({"type": ["integer", "number"]}, F),
        ({"type": ["string", "integer"]}, S),  # a union: JSON text
        ({"anyOf": [{"type": "integer"}, {"type": "null"}]}, INT),
        ({"anyOf": [{"type": "integer"}, {"type": "string"}]}, S),
        ({"type": "array", "items": {"type": "integer"}}, list_of(INT, nullable=False)),
        ({"type": "array"}, S),  # untyped items: JSON text
        ({"type": "object"}, S),  # free-form object: JSON text
        ({"type": "object", "properties": {}}, S),
        ({}, S),
        (
            {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
            struct(("a", INT, False)),
        ),
        (
            {"properties": {"a": {"type": ["integer", "null"]}}, "required": ["a"]},
            struct(("a", INT, True)),
        ),
        (
            {"properties": {"x": {"items": {"enum": ["u", "v"]}}}},
            struct(("x", list_of(S, nullable=False), True)),
        ),
        (
            {
                "$defs": {"point": {"type": "object", "properties": {"x": {"type": "number"}}}},
                "type": "object",
                "properties": {"p": {"$ref": "#/$defs/point"}},
            },
            struct(("p", struct(("x", F, True)), True)),
        ),
        (
            {"type": "object", "properties": {"next": {"$ref": "#"}}},  # recursive
            None,
        ),
    ],
)
def test_json_schema_to_arrow(schema: dict[str, Any], expected: pa.DataType | None) -> None:
    arrow = StructuredOutput(schema).arrow_type
    if expected is None:  # recursion ends in JSON text at the depth limit, without error
        assert pa.types.is_struct(arrow)
        return
    assert arrow == expected
    if pa.types.is_struct(expected):  # == ignores nullability of fields; check it too
        assert [f.nullable for f in arrow] == [f.nullable for f in expected]


@pytest.mark.parametrize(
    ("schema", "content", "value"),
    [
        ({"type": "integer"}, "3.0", 3),
        ({"type": "number"}, "3", 3.0),
        ({"enum": ["a", 1]}, "1", "1"),
        ({"type": "object"}, '{"k": [1, {"z": null}]}', '{"k":[1,{"z":null}]}'),
        (
            {"properties": {"a": {"type": "string"}, "b": {}}},
            '{"a": "x", "b": {"deep": true}, "extra": 1}',
            {"a": "x", "b": '{"deep":true}'},
        ),
        (
            {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
            "[[1, 2.5], []]",
            [[1.0, 2.5], []],
        ),
    ],
)
def test_values_take_the_shape_of_their_type(schema: Any, content: str, value: Any) -> None:
    parsed = StructuredOutput(schema)
    result, error = parsed.parse(content)
    assert error is None
    assert result == value
    assert pa.array([result], type=parsed.arrow_type).to_pylist() == [value]


def test_long_validation_messages_are_clipped() -> None:
    parsed = StructuredOutput({"type": "string", "maxLength": 1})
    value, error = parsed.parse('"' + "x" * 2000 + '"')
    assert value is None and error is not None and len(error) <= 500 and error.endswith("…")


@pytest.mark.parametrize(
    ("request_body", "found"),
    [
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"schema": {"type": "string"}},
                }
            },
            True,
        ),
        ({"response_format": {"type": "json_object"}}, False),
        ({"response_format": "{{ fmt }}"}, False),
        ({}, False),
    ],
)
def test_response_json_schema(request_body: dict[str, Any], found: bool) -> None:
    assert (response_json_schema(request_body) is not None) is found
