"""The code blocks of the README and the pages in docs/, and what a page says about each.

A block runs as it is written unless the line right above it says otherwise, in an HTML
comment that neither GitHub nor the site shows:

    <!-- docs-test: skip: REASON -->   not run (a real endpoint, an install); REASON is required
    <!-- docs-test: exit N -->         run; it (a console block: its last command) must exit N
    <!-- docs-test: background -->     a console block of one long-running command (the
                                       simulator): started, its first line read, left running
                                       for the page's later blocks, stopped at the page's end
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_DIRECTIVE = re.compile(r"^\s*<!-- docs-test: (?P<what>.*?) -->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    page: str  # the file, relative to the repository root
    line: int  # the line of the opening fence (1-based)
    lang: str
    code: str
    skip: str | None = None  # why it is not run
    exit_code: int = 0
    background: bool = False

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def pages() -> list[Path]:
    """The README and every hand-written page of the site (generated ones are tested apart)."""
    found = [ROOT / "README.md"]
    found += sorted(
        path for path in DOCS.rglob("*.md") if "_gen" not in path.parts and not is_generated(path)
    )
    return found


def is_generated(path: Path) -> bool:
    return path.read_text(encoding="utf-8").startswith("<!-- Generated from")


def blocks(path: Path) -> list[Block]:
    """Every fenced block of ``path``, with the directive written above it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    page = str(path.relative_to(ROOT))
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None or not opening["info"].strip():
            index += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        body: list[str] = []
        end = index + 1
        while end < len(lines) and lines[end].strip() != fence:
            body.append(lines[end][indent:] if lines[end][:indent].isspace() else lines[end])
            end += 1
        directive = _directive_above(lines, index, f"{page}:{index + 1}")
        lang = opening["info"].strip().split()[0]
        found.append(Block(page, index + 1, lang, "\n".join(body) + "\n", **directive))
        index = end + 1
    return found


def _directive_above(lines: list[str], index: int, where: str) -> dict[str, object]:
    above = index - 1
    while above >= 0 and not lines[above].strip():
        above -= 1
    match = _DIRECTIVE.match(lines[above]) if above >= 0 else None
    if match is None:
        return {}
    what = match["what"].strip()
    if what.startswith("skip:"):
        reason = what.removeprefix("skip:").strip()
        assert reason, f"{where}: a skipped block must say why (docs-test: skip: REASON)"
        return {"skip": reason}
    if what.startswith("exit "):
        return {"exit_code": int(what.removeprefix("exit "))}
    if what == "background":
        return {"background": True}
    raise AssertionError(f"{where}: unknown docs-test directive {what!r}")


def matches(expected: str, actual: str) -> bool:
    """Whether ``actual`` output is what a page shows: ``…`` stands for anything, and
    whitespace does not count (pages wrap long lines)."""
    squeeze = re.compile(r"\s+")
    parts = [re.escape(squeeze.sub("", part)) for part in expected.split("…")]
    return re.fullmatch(".*?".join(parts), squeeze.sub("", actual), re.DOTALL) is not None


@dataclass(frozen=True)
class ConsoleStep:
    command: str
    expected: str


def console_steps(code: str) -> list[ConsoleStep]:
    """``$ command`` lines (continued after a ``\\`` or inside quotes) and the output shown
    after each."""
    steps: list[ConsoleStep] = []
    lines = code.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        assert line.startswith("$ "), f"console output before any command: {line!r}"
        command = [line[2:]]
        while _continues("\n".join(command)) and index + 1 < len(lines):
            index += 1
            command.append(lines[index])
        index += 1
        output = []
        while index < len(lines) and not lines[index].startswith("$ "):
            output.append(lines[index])
            index += 1
        steps.append(ConsoleStep("\n".join(command), "\n".join(output)))
    return steps


def _continues(command: str) -> bool:
    """Whether a command goes on on the next line: a trailing backslash, an open quote."""
    if command.endswith("\\"):
        return True
    try:
        shlex.split(command)
    except ValueError:
        return True
    return False
