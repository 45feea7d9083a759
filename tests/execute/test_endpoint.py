"""Endpoint resolution: URLs, headers from the environment, and keys never leaking."""

from __future__ import annotations

import pytest

from batchchat.errors import SpecError
from batchchat.execute.endpoint import Target, chat_completions_url, resolve_headers
from batchchat.spec import EndpointSpec

SECRET = "sk-test-0123456789abcdef"


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("https://api.openai.com/v1", "https://api.openai.com/v1/chat/completions"),
        ("https://api.openai.com/v1/", "https://api.openai.com/v1/chat/completions"),
        ("http://gw:3000/v1/chat/completions", "http://gw:3000/v1/chat/completions"),
        (
            "https://dashscope.aliyuncs.com/compatible-mode/v1",
            "https://dashscope.aliyuncs.com/compatible-mode/v1/chat/completions",
        ),
    ],
)
def test_chat_completions_url(base_url: str, expected: str) -> None:
    assert chat_completions_url(base_url) == expected


def test_key_comes_from_the_named_variable() -> None:
    endpoint = EndpointSpec(base_url="https://x/v1", api_key_env="MY_KEY")
    headers = resolve_headers(endpoint, {"MY_KEY": SECRET})
    assert headers["Authorization"] == f"Bearer {SECRET}"
    assert headers["Content-Type"] == "application/json"


def test_missing_key_says_what_to_do_and_names_the_variable() -> None:
    endpoint = EndpointSpec(base_url="https://x/v1", api_key_env="MY_KEY")
    with pytest.raises(SpecError) as info:
        resolve_headers(endpoint, {})
    message = str(info.value)
    assert "$MY_KEY" in message
    assert "export MY_KEY=" in message
    assert "simulator" in message


def test_no_key_variable_means_no_authorization_header() -> None:
    headers = resolve_headers(EndpointSpec(base_url="http://localhost:8000/v1"), {})
    assert "Authorization" not in headers


def test_extra_headers_expand_environment_references() -> None:
    endpoint = EndpointSpec(
        base_url="https://x/v1",
        headers={"X-Org": "${ORG_ID}", "X-Static": "plain", "X-Mixed": "team-${TEAM}-a"},
    )
    headers = resolve_headers(endpoint, {"ORG_ID": "org-42", "TEAM": "data"})
    assert headers["X-Org"] == "org-42"
    assert headers["X-Static"] == "plain"
    assert headers["X-Mixed"] == "team-data-a"


def test_unset_header_variable_is_an_error_naming_it() -> None:
    endpoint = EndpointSpec(base_url="https://x/v1", headers={"X-Org": "${ORG_ID}"})
    with pytest.raises(SpecError, match=r"endpoint\.headers\.X-Org uses \$\{ORG_ID\}"):
        resolve_headers(endpoint, {})


def test_target_repr_never_shows_the_key() -> None:
    target = Target(
        url="https://x/v1/chat/completions", headers={"Authorization": SECRET}, display="x"
    )
    assert SECRET not in repr(target)
    assert SECRET not in str(target)
