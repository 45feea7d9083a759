"""Masking secrets: the values a run resolved, and whatever is shaped like a key."""

from __future__ import annotations

import pytest

from batchchat.secrets import Redactor, redact_shapes


def test_text_without_secrets_is_left_alone() -> None:
    assert redact_shapes("nothing secret here") == "nothing secret here"


def test_scrubbing_keeps_the_words_around_a_key() -> None:
    # OpenAI's 401: the error code ends in "api_key", and the next word is not a key
    message = "HTTP 401 invalid_api_key: Incorrect API key provided: sk-proj-abcdefghijklmnop12"
    assert redact_shapes(message) == "HTTP 401 invalid_api_key: Incorrect API key provided: sk-***"
    assert redact_shapes("apikey=abcdefghijklmnopqrstuvwxyz") == "apikey=***"  # long, no digits


@pytest.mark.parametrize(
    "text",
    [
        '{"error": "bad header", "headers": {"api-key": "azurekeywithoutdigitsbutknown"}}',
        "x-gateway-token: tok_abcdefgh; from ${VAR}",
        "echo: azurekeywithoutdigitsbutknown and tok_abcdefgh",
    ],
)
def test_the_values_a_run_resolved_are_masked_wherever_they_appear(text: str) -> None:
    redact = Redactor(["azurekeywithoutdigitsbutknown", "tok_abcdefgh", "abc"])
    masked = redact(text)
    assert "azurekeywithoutdigitsbutknown" not in masked and "tok_abcdefgh" not in masked
    assert redact("abc is too short to be taken for a secret") == (
        "abc is too short to be taken for a secret"
    )
