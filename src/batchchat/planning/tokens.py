"""A fast, offline token estimate (no tokenizer downloads exist on these machines).

Close to OpenAI's cl100k/o200k counts for English prose (about 0.75 words per
token) and for CJK text (about one token per character), and deliberately
simple: the planner runs it once per request, the simulator once per response.
A job may ask for exact counts instead (``limits.tokenizer: tiktoken``) when ``tiktoken``
is installed *with its o200k encoding already cached* (nothing is downloaded).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from typing import Any

from batchchat.errors import SpecError

# a word piece of up to 4 letters, 1-3 digits, one CJK character, or one other symbol
_PIECE = re.compile(
    r"[A-Za-z]{1,4}|\d{1,3}|[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]|[^\sA-Za-z\d]"
)

#: tokens a chat format spends per message (role and separators) and to prime the reply
PER_MESSAGE_TOKENS = 3
REPLY_PRIMING_TOKENS = 3
#: what an image part costs at "low" detail; the estimate does not fetch images
IMAGE_TOKENS = 85


def estimate_text_tokens(text: str) -> int:
    """Estimated tokens of a piece of text."""
    return len(_PIECE.findall(text))


TextCounter = Callable[[str], int]


def estimate_prompt_tokens(
    messages: Iterable[Any], *, counter: TextCounter = estimate_text_tokens
) -> int:
    """Prompt tokens of a list of chat messages (content parts included), each text counted
    by ``counter`` (the offline estimate unless a job chose tiktoken)."""
    total = REPLY_PRIMING_TOKENS
    for message in messages:
        total += PER_MESSAGE_TOKENS
        if not isinstance(message, dict):
            continue
        total += _content_tokens(message.get("content"), counter)
        for key in ("name", "tool_call_id", "reasoning_content"):
            value = message.get(key)
            if isinstance(value, str):
                total += counter(value)
        for call in message.get("tool_calls") or ():
            function = call.get("function", {}) if isinstance(call, dict) else {}
            total += counter(str(function.get("name", ""))) + counter(
                str(function.get("arguments", ""))
            )
    return total


def _content_tokens(content: Any, counter: TextCounter) -> int:
    if isinstance(content, str):
        return counter(content)
    if not isinstance(content, list):
        return 0
    total = 0
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            total += counter(str(part.get("text", "")))
        elif part.get("type") in {"image_url", "video_url", "input_audio", "file"}:
            total += IMAGE_TOKENS
    return total


def text_counter(tokenizer: str) -> TextCounter:
    """The counter a job's ``limits.tokenizer`` names: ``estimate`` or ``tiktoken``."""
    if tokenizer == "estimate":
        return estimate_text_tokens
    counter = _tiktoken_counter()
    if counter is None:
        raise SpecError(
            "limits.tokenizer: tiktoken is not installed, or its o200k_base encoding is not "
            "cached (batchchat never downloads one): pip install tiktoken and cache the "
            "encoding where TIKTOKEN_CACHE_DIR points, or use tokenizer: estimate"
        )
    return counter


@functools.cache
def _tiktoken_counter() -> TextCounter | None:
    """tiktoken's o200k counter when installed with a cached encoding; None otherwise."""
    try:
        import tiktoken  # type: ignore[import-not-found]

        encoding = tiktoken.get_encoding("o200k_base")
    except Exception:  # not installed, or its encoding would need a download
        return None
    return lambda text: len(encoding.encode(text, disallowed_special=()))
