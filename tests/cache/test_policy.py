"""Which requests the cache may answer and which answers it keeps, as tables."""

from __future__ import annotations

from typing import Any

import pytest

from batchchat.cache.policy import cache_key, is_deterministic, is_storable, may_serve
from batchchat.models import ChatRequest
from batchchat.spec import CacheSpec
from tests._results import make_choice, make_result


def request(seed: int | None = None, request_hash: str = "h1", **body: Any) -> ChatRequest:
    return ChatRequest("r", 2, "r#2", {"model": "m", **body}, request_hash, 1, 1, seed=seed)


@pytest.mark.parametrize(
    ("body", "seed", "deterministic"),
    [
        ({"temperature": 0}, None, True),
        ({"temperature": 0.0}, None, True),
        ({"temperature": 0.7}, 12, True),  # a seed, fixed or per row
        ({"temperature": 1}, None, False),
        ({}, None, False),  # the API's default temperature is 1
        ({"temperature": False}, None, False),  # not a number
        ({"temperature": "0"}, None, False),
        ({}, 0, True),
    ],
)
def test_deterministic_by_construction(
    body: dict[str, Any], seed: int | None, deterministic: bool
) -> None:
    assert is_deterministic(request(seed, **body)) is deterministic
    assert may_serve(CacheSpec(), request(seed, **body)) is deterministic
    assert may_serve(CacheSpec(serve="any"), request(seed, **body))


def test_a_request_that_was_never_planned_is_never_served() -> None:
    assert not may_serve(CacheSpec(serve="any"), request(request_hash=""))


def test_the_key_is_the_request_hash_and_the_sample() -> None:
    assert cache_key(request(request_hash="abc")) == "abc#2"


@pytest.mark.parametrize(
    ("finishes", "settings", "storable"),
    [
        (["stop"], {}, True),
        (["tool_calls"], {}, True),
        (["stop", "stop"], {}, True),
        (["length"], {}, False),
        (["stop", "length"], {}, False),
        (["length"], {"store_length": True}, True),
        (["content_filter"], {}, False),
        (["content_filter"], {"store_content_filter": True}, True),
        ([None], {"store_length": True, "store_content_filter": True}, False),
        ([], {}, False),
    ],
)
def test_only_complete_answers_are_kept(
    finishes: list[str | None], settings: dict[str, Any], storable: bool
) -> None:
    choices = [make_choice(finish_reason=f, index=i) for i, f in enumerate(finishes)]  # type: ignore[arg-type]
    result = make_result("1", choices=choices)
    assert result.response is not None
    assert is_storable(CacheSpec(**settings), result.response) is storable
