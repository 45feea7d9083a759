"""Plain columns built from buffers: the same arrays as the general conversion, or none."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchchat.results.arrays import plain_array
from batchchat.results.encoder import _polars_type, _to_array

UTC_US = pa.timestamp("us", tz="UTC")
PLAIN = {
    pa.string(): st.text(),
    pa.int64(): st.integers(min_value=-(2**63), max_value=2**63 - 1),
    pa.float64(): st.floats(allow_nan=True, allow_infinity=True),
    pa.bool_(): st.booleans(),
    UTC_US: st.datetimes(
        min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
    ),
}


def general(field: pa.Field, values: list[Any]) -> pa.Array:
    """What the encoder's general conversion (through polars) makes of ``values``."""
    return _to_array(field, values, list(range(len(values))), _polars_type(field.type))


@pytest.mark.parametrize("arrow_type", list(PLAIN), ids=str)
@settings(deadline=None)  # the first example imports polars' conversion code
@given(data=st.data())
def test_plain_columns_equal_the_general_conversion(arrow_type: pa.DataType, data: Any) -> None:
    values = data.draw(st.lists(st.none() | PLAIN[arrow_type], max_size=70))
    field = pa.field("c", arrow_type)
    array = plain_array(field, values)
    assert array is not None
    array.validate(full=True)
    assert array.type == arrow_type and array.null_count == values.count(None)
    assert same(array, general(field, values))


def same(one: pa.Array, other: pa.Array) -> bool:
    """Equal values and nulls, NaN equal to NaN (Arrow's equals() says NaN != NaN)."""
    nan = "NaN"
    tagged = [[nan if v != v else v for v in a.to_pylist()] for a in (one, other)]
    return one.type == other.type and tagged[0] == tagged[1]


@pytest.mark.parametrize(
    ("arrow_type", "values"),
    [
        (pa.int64(), [1, 2.0]),  # a float in an integer column
        (pa.int64(), [1, True]),  # a bool is not an integer here
        (pa.int64(), [2**63]),  # beyond 64 bits
        (pa.float64(), [1.5, 2]),  # an int in a float column: the general way decides
        (pa.bool_(), [True, 1]),  # an int is not a bool here
        (pa.string(), ["a", b"b"]),
        (pa.string(), ["\ud800"]),  # a lone surrogate is not UTF-8
        (UTC_US, [datetime(2026, 1, 1)]),  # naive: which zone it means is not ours to guess
        (pa.int32(), [1]),  # not a plain type
        (pa.list_(pa.string()), [["a"]]),
    ],
    ids=str,
)
def test_values_not_exactly_of_the_type_are_left_to_the_general_way(
    arrow_type: pa.DataType, values: list[Any]
) -> None:
    assert plain_array(pa.field("c", arrow_type), values) is None


def test_an_aware_datetime_of_another_zone_is_the_same_instant() -> None:
    paris = timezone(timedelta(hours=1))
    array = plain_array(pa.field("t", UTC_US), [datetime(2026, 1, 1, 13, tzinfo=paris)])
    assert array is not None and array.to_pylist() == [datetime(2026, 1, 1, 12, tzinfo=UTC)]


def test_all_null_columns_keep_their_type_and_length() -> None:
    calls = pa.list_(pa.struct([("id", pa.string())]))
    array = plain_array(pa.field("tool_calls", calls), [None] * 3)
    assert array is not None and array.type == calls and array.null_count == 3


def test_nulls_in_a_non_nullable_field_or_struct_are_left_to_the_general_way() -> None:
    assert plain_array(pa.field("c", pa.string(), nullable=False), ["a", None]) is None
    required = pa.struct([pa.field("x", pa.int64(), nullable=False)])
    assert plain_array(pa.field("parsed", required), [None, None]) is None
