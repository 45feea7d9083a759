"""The templates' sandbox: jinja2's immutable sandbox, bounded in what a template may build.

jinja2's sandbox keeps a template from reaching Python's internals and bounds ``range``,
but not ``'a' * 3000000000`` (three gigabytes in one step), ``10 ** 10 ** 8``, or loops
that print for ever. Here ``*`` and ``**`` are checked before they run, and a rendering
stops as soon as its text passes :data:`MAX_TEMPLATE_CHARS`: a template error naming the
template and the row, instead of a process that runs out of memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

#: the most characters one template may build: far more than any prompt, far less than RAM
MAX_TEMPLATE_CHARS = 8_000_000
#: the largest exponent ``**`` takes
_MAX_EXPONENT = 1_000


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """An immutable sandbox whose ``*`` and ``**`` cannot build more than a prompt's worth."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(
        self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any
    ) -> Any:
        if operator == "*":
            _check_repeat(left, right)
            _check_repeat(right, left)
        elif operator == "**" and isinstance(right, int) and abs(right) > _MAX_EXPONENT:
            raise SecurityError(f"an exponent above {_MAX_EXPONENT:,} ({right:,}) is refused")
        return super().call_binop(context, operator, left, right)


def _check_repeat(sequence: Any, times: Any) -> None:
    if isinstance(sequence, str | list | tuple) and isinstance(times, int):
        size = len(sequence) * times
        if size > MAX_TEMPLATE_CHARS:
            raise SecurityError(
                f"repeating {len(sequence):,} items {times:,} times would build {size:,}; the "
                f"most a template may build is {MAX_TEMPLATE_CHARS:,}"
            )


def render_bounded(template: jinja2.Template, context: Mapping[str, Any]) -> str:
    """``template.render(context)``, stopped once the text passes MAX_TEMPLATE_CHARS."""
    parts: list[str] = []
    size = 0
    for chunk in template.generate(context):
        size += len(chunk)
        if size > MAX_TEMPLATE_CHARS:
            raise SecurityError(
                f"the template built more than {MAX_TEMPLATE_CHARS:,} characters: refused"
            )
        parts.append(chunk)
    return "".join(parts)
