"""Templates: native values, strict errors with location and row, the sandbox, data_url."""

from __future__ import annotations

import base64
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchchat.errors import TemplateError
from batchchat.planning.media import data_url
from batchchat.planning.templates import compile_tree, make_environment

ROW: dict[str, Any] = {
    "text": "Great mug",
    "rating": 4,
    "score": 0.5,
    "tags": ["a", "b"],
    "meta": {"k": 1},
    "missing": None,
    "when": datetime(2024, 5, 1, 9, 30),
    "day": date(2024, 5, 1),
    "price": Decimal("9.99"),
    "my col": "spaced",
}


def context(row: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    row = dict(ROW if row is None else row)
    ctx = {**row, "row": row, "vars": {"lang": "en", "temp": "0.7"}, "row_id": "r-1", "sample": 0}
    ctx.update(extra)
    return ctx


def render(value: Any, key: str | int | None = None, ctx: dict[str, Any] | None = None) -> Any:
    tree = compile_tree(value, "request.x", make_environment("."), key=key)
    assert not tree.problems, tree.problems
    return tree.render(ctx if ctx is not None else context())


@pytest.mark.parametrize(
    ("template", "key", "expected"),
    [
        # a lone {{ expr }} keeps the value's type
        ("{{ rating }}", None, 4),
        ("{{ score }}", None, 0.5),
        ("{{ score * 2 }}", None, 1.0),
        ("{{ tags }}", None, ["a", "b"]),
        ("{{ meta }}", None, {"k": 1}),
        ("{{ missing }}", None, None),
        ("{{ rating > 3 }}", None, True),
        ("{{ [rating, score] }}", None, [4, 0.5]),
        ("{{ when }}", None, "2024-05-01T09:30:00"),
        ("{{ day }}", None, "2024-05-01"),
        ("{{ price }}", None, 9.99),
        ("{{ row['my col'] }}", None, "spaced"),
        ("{{ vars.lang }}", None, "en"),
        ("{{ sample }}", None, 0),
        ("{{- rating -}}", None, 4),
        # ...except at string fields, where scalars become text
        ("{{ rating }}", "content", "4"),
        ("{{ rating }}", "text", "4"),
        ("{{ rating }}", "model", "4"),
        ("{{ missing }}", "content", None),  # null stays null: the rules flag the row
        # ...and at content and text, mappings and lists are sent as JSON text
        ("{{ tags }}", "content", '["a","b"]'),
        ("{{ meta }}", "content", '{"k":1}'),
        ("{{ meta }}", "text", '{"k":1}'),
        ("{{ meta }}", "arguments", '{"k":1}'),
        (
            "{{ [{'type': 'text', 'text': text}] }}",
            "content",
            [{"type": "text", "text": "Great mug"}],
        ),
        ("{{ [] }}", "content", []),  # an empty part list, reported by the message check
        ("{{ tags }}", "name", ["a", "b"]),  # a mistake at a name, reported by the planner
        ("Tags: {{ tags }}, meta {{ meta }}", None, 'Tags: ["a","b"], meta {"k":1}'),
        ("{% if rating %}{{ meta }}{% endif %}", None, '{"k":1}'),
        # anything else around the expression makes a string
        ("Review: {{ text }}", None, "Review: Great mug"),
        (" {{ rating }}", None, " 4"),
        ("{{ rating }}{{ score }}", None, "40.5"),
        ("{{ text }} ({{ rating }}/5) {{ missing }}!", None, "Great mug (4/5) !"),
        ("{{ row_id }}#{{ sample }}", None, "r-1#0"),
        ("{{ text | upper }}", "content", "GREAT MUG"),
        ("{% if rating > 3 %}good{% else %}bad{% endif %}", None, "good"),
        ("{% for t in tags %}[{{ t }}]{% endfor %}", None, "[a][b]"),
        ("{{ meta | json }}", None, '{"k":1}'),
        ("{{ tags | join(', ') }}", None, "a, b"),
        ('{{ "%.1f" | format(score) }}', None, "0.5"),
        ("{ not a template }", None, "{ not a template }"),
        ("plain text", None, "plain text"),
    ],
)
def test_values(template: str, key: str | None, expected: Any) -> None:
    value = render(template, key)
    assert value == expected
    assert type(value) is type(expected)


def test_structures_render_recursively_and_static_parts_are_fresh_copies() -> None:
    spec = {"a": [{"type": "text", "text": "{{ text }}"}, 1, True, None], 5: "x"}
    tree = compile_tree(spec, "request.tools", make_environment("."))
    first, second = tree.render(context()), tree.render(context())
    assert first == {"a": [{"type": "text", "text": "Great mug"}, 1, True, None], "5": "x"}
    first["a"].append("mutated")
    assert second["a"][-1] is None  # rendering never shares containers between rows
    assert [ref.location for ref in tree.refs] == ["request.tools.a[0].text"]


@pytest.mark.parametrize(
    ("template", "columns", "var_names", "whole_row"),
    [
        ("{{ text }} {{ rating }}", {"text", "rating"}, set(), False),
        ("{{ row.text }} {{ row['my col'] }}", {"text", "my col"}, set(), False),
        ("{{ vars.lang }} {{ vars['tone'] }}", set(), {"lang", "tone"}, False),
        ("{% for t in tags %}{{ t }}{% endfor %}", {"tags"}, set(), False),
        ("{{ row | json }}", set(), set(), True),
        ("{{ row_id }} {{ sample }} {{ range(3) | list }}", set(), set(), False),
    ],
)
def test_references(template: str, columns: set[str], var_names: set[str], whole_row: bool) -> None:
    tree = compile_tree(template, "request.x", make_environment("."))
    (ref,) = tree.refs
    assert ref.columns == columns
    assert ref.var_names == var_names
    assert ref.uses_whole_row is whole_row


@pytest.mark.parametrize(
    ("template", "fragments"),
    [
        ("Review: {{ txt }}", ["request.x", "'txt' is undefined", "did you mean 'text'", "'r-1'"]),
        ("{{ Rating }}", ["'Rating' is undefined", "did you mean 'rating'"]),
        ("{{ zzz | upper }}", ["'zzz' is undefined", "columns: text, rating"]),
        ("{{ vars.nope }}", ["'vars' has no attribute 'nope'", "'r-1'"]),
        ("{{ row.nope }} x", ["has no attribute 'nope'"]),
        ("{{ text + rating }}", ["request.x", "'r-1'"]),
        ("{{ 1 / 0 }}", ["division by zero"]),
    ],
)
def test_render_errors_name_problem_location_and_row(template: str, fragments: list[str]) -> None:
    with pytest.raises(TemplateError) as caught:
        render(template)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_syntax_errors_are_collected_with_locations() -> None:
    tree = compile_tree(
        {"a": "{{ text ", "b": ["ok", "{% if %}"]}, "request.metadata", make_environment(".")
    )
    assert len(tree.problems) == 2
    assert tree.problems[0].startswith("request.metadata.a: template syntax error")
    assert tree.problems[1].startswith("request.metadata.b[1]: template syntax error")


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ text.__class__.__base__.__subclasses__() }}",
        "{{ row.__class__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ vars.update({'lang': 'xx'}) }}",
        "{{ tags.append('x') }}",
        "{{ '{0.__class__.__init__.__globals__}'.format(text) }}",
    ],
)
def test_the_sandbox_blocks_python_internals_and_mutation(template: str) -> None:
    ctx = context()
    with pytest.raises(TemplateError) as caught:
        render(template, ctx=ctx)
    assert "request.x" in str(caught.value)
    assert ctx["vars"] == {"lang": "en", "temp": "0.7"}
    assert ctx["tags"] == ["a", "b"]


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def test_data_url_reads_media_relative_to_the_spec(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "cat.png").write_bytes(PNG)
    env = make_environment(str(tmp_path))
    tree = compile_tree(
        "{{ path | data_url }}", "request.messages[0].content[1].image_url.url", env
    )
    url = tree.render(context({"path": "img/cat.png"}))
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == PNG


@pytest.mark.parametrize(
    "value", ["https://example.com/a.png", "http://x/y.jpg", "data:image/png;base64,AAAA"]
)
def test_data_url_passes_urls_through(value: str) -> None:
    assert data_url(value, base_dir="/nonexistent") == value


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("missing.png", None, "cannot read"),
        ("secrets.env", b"OPENAI_API_KEY=sk-123", "not an image, audio, video or PDF"),
        ("id_rsa", b"-----BEGIN", "not an image, audio, video or PDF"),
    ],
)
def test_data_url_refuses_what_it_should_not_send(
    tmp_path: Path, name: str, content: bytes | None, fragment: str
) -> None:
    if content is not None:
        (tmp_path / name).write_bytes(content)
    tree = compile_tree("{{ path | data_url }}", "request.x.url", make_environment(str(tmp_path)))
    with pytest.raises(TemplateError) as caught:
        tree.render(context({"path": name}, row_id="row-9"))
    message = str(caught.value)
    assert fragment in message
    assert "request.x.url" in message and "'row-9'" in message
    assert "sk-123" not in message


def test_data_url_of_a_null_cell_says_the_cell_is_empty(tmp_path: Path) -> None:
    (tmp_path / "None").write_bytes(PNG)  # str(None) must never be read as a file name
    tree = compile_tree("{{ path | data_url }}", "request.x.url", make_environment(str(tmp_path)))
    with pytest.raises(TemplateError, match=r"the cell is empty \(null\).*row id 'row-3'"):
        tree.render(context({"path": None}, row_id="row-3"))


names = st.sampled_from(["text", "rating", "score", "missing", "day"])
# no "\r": Jinja turns it into "\n", while text without a template is sent verbatim
literal = st.text(alphabet=st.characters(blacklist_characters="{}%#\r"), max_size=12)


@given(st.lists(st.one_of(names.map(lambda n: ("name", n)), literal.map(lambda t: ("t", t)))))
def test_fast_paths_render_exactly_like_jinja(pieces: list[tuple[str, str]]) -> None:
    source = "".join(f"{{{{ {v} }}}}" if kind == "name" else v for kind, v in pieces)
    env = make_environment(".")
    ctx = context()
    value = render(source, key="content", ctx=ctx)
    expected: str | None = env.from_string(source).render(ctx)
    names = [v for kind, v in pieces if kind == "name"]
    alone = len(names) == 1 and all(v == "" for kind, v in pieces if kind != "name")
    if alone and ctx[names[0]] is None:
        expected = None  # a null cell as the whole value stays null (Jinja would say "")
    assert value == expected


@pytest.mark.parametrize(
    ("images", "urls"),
    [
        (["https://x/1.png", None, "https://x/2.png"], ["https://x/1.png", "https://x/2.png"]),
        ('["https://x/1.png", "img/cat.png"]', ["https://x/1.png", "data:image/png;base64,"]),
        ("img/cat.png", ["data:image/png;base64,"]),  # one image
        ("https://x/1.png", ["https://x/1.png"]),
        (None, []),
        ("", []),
        ([], []),
    ],
)
def test_image_parts_turn_images_into_parts(tmp_path: Path, images: Any, urls: list[str]) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "cat.png").write_bytes(PNG)
    env = make_environment(str(tmp_path))
    tree = compile_tree(
        "{{ images | image_parts }}", "request.messages[0].content", env, key="content"
    )
    parts = tree.render(context({"images": images}))
    assert [p["type"] for p in parts] == ["image_url"] * len(urls)
    for part, url in zip(parts, urls, strict=True):
        assert part["image_url"]["url"].startswith(url)
        assert set(part["image_url"]) == {"url"}


def test_image_parts_take_a_detail_and_a_root_for_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "cat.png").write_bytes(PNG)
    env = make_environment(str(tmp_path))
    source = "{{ images | image_parts(detail='high', root=vars.dir) }}"
    tree = compile_tree(source, "request.messages[0].content", env, key="content")
    ctx = context({"images": ["cat.png", "https://x/y.png"]})
    ctx["vars"] = {"dir": "img"}
    (local, remote) = tree.render(ctx)
    assert local["image_url"]["detail"] == "high"
    assert base64.b64decode(local["image_url"]["url"].split(",", 1)[1]) == PNG
    assert remote["image_url"] == {"url": "https://x/y.png", "detail": "high"}


@pytest.mark.parametrize(
    ("images", "fragment"),
    [
        ([1, 2], "image_parts: expects image URLs or paths"),
        ({"url": "x"}, "image_parts: expects image URLs or paths"),
        ("[not json", "image_parts: text that looks like a JSON list is not"),
        (["notes.txt"], "not an image, audio, video or PDF"),
        (["gone.png"], "cannot read"),
    ],
)
def test_image_parts_errors_name_the_place_and_row(
    tmp_path: Path, images: Any, fragment: str
) -> None:
    (tmp_path / "notes.txt").write_text("secret")
    tree = compile_tree(
        "{{ images | image_parts }}", "request.messages[0].content", make_environment(str(tmp_path))
    )
    with pytest.raises(TemplateError) as caught:
        tree.render(context({"images": images}, row_id="row-3"))
    assert fragment in str(caught.value)
    assert "request.messages[0].content" in str(caught.value) and "'row-3'" in str(caught.value)
