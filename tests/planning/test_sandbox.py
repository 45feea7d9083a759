"""A template cannot build gigabytes: it is refused with an error naming it and the row."""

from __future__ import annotations

import pytest

from batchchat.errors import TemplateError
from batchchat.planning.sandbox import MAX_TEMPLATE_CHARS
from batchchat.planning.templates import compile_tree, make_environment


def render(source: str, **row: object) -> object:
    tree = compile_tree(source, "request.messages[0].content", make_environment("."))
    assert not tree.problems
    return tree.render({**row, "row": row, "row_id": "r1", "vars": {}})


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'a' * 3000000000 }}",  # one expression: evaluated natively
        "Text: {{ 'a' * 3000000000 }}",  # inside a sentence: rendered by Jinja
        "{{ 3000000000 * ['x'] }}",
        "{{ 10 ** 100000000 }}",
        "{% for i in range(90000) %}{{ 'x' * 1000 }}{% endfor %}",  # a loop that prints 90 MB
    ],
)
def test_a_template_that_would_build_too_much_is_refused(source: str) -> None:
    with pytest.raises(TemplateError) as caught:
        render(source)
    message = str(caught.value)
    assert "not allowed in a template" in message and "(row id 'r1')" in message


def test_a_large_but_reasonable_template_renders() -> None:
    text = render("{{ text * 1000 }}", text="abc")
    assert isinstance(text, str) and len(text) == 3000 < MAX_TEMPLATE_CHARS
