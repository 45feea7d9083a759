"""Exact quantiles by counting: the same value as sorting the whole column."""

from __future__ import annotations

import random

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchchat.report.quantiles import VALUE, nearest_rank, select_rank


@pytest.mark.parametrize("n", [1, 2, 3, 6, 10, 11, 26, 101, 1000, 1001])
@pytest.mark.parametrize("q", [0.1, 0.25, 0.5, 0.9, 0.99])
def test_the_rank_is_the_one_polars_takes_for_nearest(n: int, q: float) -> None:
    column = pl.Series([float(i) for i in range(n)]).shuffle(seed=n)
    assert float(nearest_rank(q, n)) == column.quantile(q, "nearest")


def _select(values: list[float], rank: int, hold: int) -> float:
    frame = pl.LazyFrame({VALUE: values}, schema={VALUE: pl.Float64})
    low, high = min(values), max(values)
    return select_rank(frame, rank, low=low, high=high, count=len(values), hold=hold)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(
        st.one_of(
            st.floats(0, 1e6, allow_nan=False),
            st.sampled_from([0.0, 1.5, 1.5000000000000002, 7.0]),  # repeats and neighbours
        ),
        min_size=1,
        max_size=300,
    ),
    where=st.floats(0, 1),
    hold=st.integers(1, 20),
)
def test_counting_down_to_a_few_values_gives_the_sorted_columns_value(
    values: list[float], where: float, hold: int
) -> None:
    rank = min(int(where * len(values)), len(values) - 1)
    assert _select(values, rank, hold) == sorted(values)[rank]


def test_a_skewed_column_far_bigger_than_what_is_held() -> None:
    rng = random.Random(15)
    # most values in a narrow band, a few far out (timeouts): many passes narrow it down
    values = [rng.gauss(50, 0.001) for _ in range(20_000)] + [60_000.0] * 5 + [0.001]
    ordered = sorted(values)
    for rank in (0, 1, 10_000, 19_999, len(values) - 1):
        assert _select(values, rank, hold=64) == ordered[rank]


def test_one_value_repeated_ends_at_once() -> None:
    assert _select([3.25] * 5000, 4321, hold=10) == 3.25
