"""Troubleshooting quotes the messages batchchat really prints: a reworded message fails here.

Each ``### `message` `` heading of docs/troubleshooting.md, with ``…`` where the message
varies, must be a message that some string in src/batchchat renders (f-string fields count as
``…``; rich markup such as ``[red]`` is not printed, so it does not count).
"""

from __future__ import annotations

import ast
import re
from functools import cache

import pytest

from tests.docs._markdown import DOCS, ROOT

PAGE = DOCS / "troubleshooting.md"
HEADING = re.compile(r"^### `(?P<message>.+)`$", re.M)
MARKUP = re.compile(r"\[/?[a-z ]*\]")


@cache
def rendered_strings() -> tuple[str, ...]:
    """Every string literal of the package as it prints, an f-string's fields as ``…``."""
    found = []
    for path in sorted((ROOT / "src" / "batchchat").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.JoinedStr):
                found.append(_render(node))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.append(node.value)
    return tuple(MARKUP.sub("", text) for text in found)


def _render(node: ast.JoinedStr) -> str:
    return "".join(part.value if isinstance(part, ast.Constant) else "…" for part in node.values)


def is_printed(message: str) -> bool:
    """Whether some string of the package prints ``message`` (``…`` matching anything)."""
    pattern = re.compile(".*?".join(re.escape(piece) for piece in message.split("…")), re.S)
    return any(pattern.search(text) for text in rendered_strings())


MESSAGES = HEADING.findall(PAGE.read_text(encoding="utf-8"))


def test_the_page_quotes_messages() -> None:
    assert len(MESSAGES) >= 40


@pytest.mark.parametrize("message", MESSAGES)
def test_each_quoted_message_is_one_batchchat_prints(message: str) -> None:
    assert is_printed(message), f"no string in src/batchchat prints {message!r}"


def test_a_reworded_message_would_be_noticed() -> None:
    assert is_printed("input.path: … does not exist (resolved to …)")
    assert not is_printed("input.path: … was not found (resolved to …)")
