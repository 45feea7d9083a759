"""What the simulator's Batch API validation refuses in an input file, as a table."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from batchchat.simulator.batchfile import check_input

URL = "/v1/chat/completions"


def line(**fields: Any) -> bytes:
    data = {"custom_id": "a#0", "method": "POST", "url": URL, "body": {"model": "m"}, **fields}
    return orjson.dumps({k: v for k, v in data.items() if v is not None})


@pytest.mark.parametrize(
    ("content", "code", "number"),
    [
        (b"", "empty_file", None),
        (b"not json\n", "invalid_json_line", 1),
        (b"[1]\n", "missing_required_parameter", 1),
        (line(custom_id=None), "missing_required_parameter", 1),
        (line(method="GET"), "invalid_url", 1),
        (line(url="/v1/embeddings"), "invalid_url", 1),
        (line(body={"messages": []}), "missing_required_parameter", 1),
        (line(body={"model": "m", "stream": True}), "invalid_request", 1),
        (line() + b"\n" + line(), "duplicate_custom_id", 2),
    ],
)
def test_each_problem_of_a_file_is_named_with_its_line(
    content: bytes, code: str, number: int | None
) -> None:
    checked = check_input(content, URL, max_lines=10, max_bytes=10_000)
    assert [(e["code"], e["line"]) for e in checked.errors] == [(code, number)]


def test_the_file_limits_are_checked_first() -> None:
    many = b"\n".join(line(custom_id=f"r{i}#0") for i in range(5))
    assert (
        check_input(many, URL, max_lines=4, max_bytes=10_000).errors[0]["code"]
        == "too_many_requests"
    )
    assert check_input(many, URL, max_lines=9, max_bytes=50).errors[0]["code"] == "file_too_large"
    valid = check_input(many, URL, max_lines=9, max_bytes=10_000)
    assert valid.errors == [] and valid.model == "m" and len(valid.lines) == 5


def test_the_errors_listed_are_at_most_ten() -> None:
    bad = b"\n".join(b"x" for _ in range(30))
    assert len(check_input(bad, URL, max_lines=50, max_bytes=10_000).errors) == 10
