"""Python values → Arrow arrays of the plain column types, built straight from buffers.

Most result columns are strings, 64-bit integers, floats, booleans or UTC timestamps, and in a
batch of results many hold only nulls. Building those arrays from their buffers costs a
few microseconds a column, against ~50 µs for a conversion through polars (a Series,
``to_arrow`` and a cast) and the ~0.25 s pandas import that any pyarrow conversion of
Python values makes. :func:`plain_array` is exact by construction: a value that does not
have exactly the column's type (a float in an integer column, an int beyond 64 bits, a
naive datetime, a string that is not valid UTF-8) makes it give up, returning None, and
the caller converts that column the general way, which also names a value that fits
nowhere.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import Any

import pyarrow as pa

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_TIMESTAMP = pa.timestamp("us", tz="UTC")

#: what a value of the wrong kind raises on its way into a buffer
_MISFITS = (TypeError, ValueError, OverflowError, AttributeError, UnicodeEncodeError)


def plain_array(field: pa.Field, values: Sequence[Any]) -> pa.Array | None:
    """``values`` as an array of ``field``'s type; None when the type is not a plain one or
    a value is not exactly of it (then convert the general way)."""
    n = len(values)
    nulls = values.count(None)
    if nulls and not field.nullable:
        return None
    if nulls == n and not pa.types.is_struct(field.type):
        # (a struct's null rows still have children, which may be declared non-nullable)
        return pa.nulls(n, field.type)
    build = _BUILDERS.get(field.type)
    if build is None:
        return None
    validity = _validity(values) if nulls else None
    try:
        return build(values, validity, nulls)
    except _MISFITS:
        return None


def _validity(values: Sequence[Any]) -> pa.Buffer:
    """The validity bitmap: bit i set when value i is not null (least significant first)."""
    return _bitmap(values, lambda value: value is not None)


def _bitmap(values: Sequence[Any], is_set: Callable[[Any], bool]) -> pa.Buffer:
    bits = 0
    for index, value in enumerate(values):
        if is_set(value):
            bits |= 1 << index
    return pa.py_buffer(bits.to_bytes((len(values) + 7) // 8, "little"))


def _booleans(values: Sequence[Any], validity: pa.Buffer | None, nulls: int) -> pa.Array:
    for value in values:
        if value is not None and type(value) is not bool:
            raise TypeError(f"not a bool: {type(value).__name__}")
    data = _bitmap(values, lambda value: value is True)
    return pa.Array.from_buffers(pa.bool_(), len(values), [validity, data], nulls)


def _strings(values: Sequence[Any], validity: pa.Buffer | None, nulls: int) -> pa.Array:
    encoded = [b"" if value is None else _utf8(value) for value in values]
    offsets = array("i", (0, *accumulate(map(len, encoded))))  # int32: 2 GiB a batch at most
    data = pa.py_buffer(b"".join(encoded))
    return pa.Array.from_buffers(
        pa.string(), len(values), [validity, pa.py_buffer(offsets), data], nulls
    )


def _utf8(value: str) -> bytes:
    if type(value) is not str:
        raise TypeError(f"not a str: {type(value).__name__}")
    return value.encode()


def _numbers(kind: str, arrow_type: pa.DataType, exact: type) -> _Builder:
    def build(values: Sequence[Any], validity: pa.Buffer | None, nulls: int) -> pa.Array:
        for value in values:
            if value is not None and type(value) is not exact:
                raise TypeError(f"not an {exact.__name__}: {type(value).__name__}")
        filled = values if validity is None else [0 if v is None else v for v in values]
        data = pa.py_buffer(array(kind, filled))
        return pa.Array.from_buffers(arrow_type, len(values), [validity, data], nulls)

    return build


def _timestamps(values: Sequence[Any], validity: pa.Buffer | None, nulls: int) -> pa.Array:
    # naive datetimes raise TypeError here (an aware one minus an aware epoch is exact)
    micros = [0 if value is None else (_aware(value) - _EPOCH) // _MICROSECOND for value in values]
    data = pa.py_buffer(array("q", micros))
    return pa.Array.from_buffers(_TIMESTAMP, len(values), [validity, data], nulls)


def _aware(value: datetime) -> datetime:
    if type(value) is not datetime or value.tzinfo is None:
        raise TypeError("not a timezone-aware datetime")
    return value


_Builder = Callable[[Sequence[Any], "pa.Buffer | None", int], pa.Array]

_BUILDERS: dict[pa.DataType, _Builder] = {
    pa.string(): _strings,
    pa.int64(): _numbers("q", pa.int64(), int),
    pa.float64(): _numbers("d", pa.float64(), float),
    pa.bool_(): _booleans,
    _TIMESTAMP: _timestamps,
}
