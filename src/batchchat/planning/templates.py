"""Sandboxed, strict templates over row columns, compiled once per spec.

Every string under ``request:`` may be a Jinja2 template. :func:`compile_tree`
turns the request mapping into a tree of small render functions, once; per
row only the templated leaves run, static parts are rebuilt by a cheap copy.

Variables: every row column by name, ``row`` (all columns, for names that are
not identifiers), ``vars`` (spec.vars), ``row_id`` and ``sample``, and in a
labeling job ``labels`` (``output.labels`` as label → description, given by the
planner); these built-in names win over columns of the same name. A string that is exactly one
``{{ expr }}`` renders to the expression's *native* value (numbers stay
numbers, lists stay lists), except at :data:`STRING_FIELDS` where scalars
become text, and at :data:`DATA_TEXT_FIELDS` where mappings and lists become
their JSON text (a list of content parts at ``content`` stays a list). Inside a
larger string ``null`` renders as empty text and mappings and lists as JSON.
"""

from __future__ import annotations

import base64
import difflib
import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import jinja2
import orjson
from jinja2 import meta, nodes

from batchchat.errors import TemplateError
from batchchat.planning.media import data_url, image_parts
from batchchat.planning.rules import PART_TYPES
from batchchat.planning.sandbox import BoundedSandbox, render_bounded

#: names every template sees besides the row's columns
BUILTIN_NAMES = frozenset({"row", "vars", "row_id", "sample"})

#: keys whose templated scalar value is always sent as a string
STRING_FIELDS = frozenset(
    {
        "content", "text", "name", "model", "user", "url", "role", "detail", "tool_call_id",
        "description", "arguments", "refusal", "reasoning_content", "filename", "file_data",
        "file_id", "data", "format", "voice", "reasoning_effort", "service_tier", "id",
    }
)  # fmt: skip
#: string fields where structured data (a dict or list column) is sent as its JSON text;
#: at the other string fields a mapping or list stays as it is, to be reported as a mistake
DATA_TEXT_FIELDS = frozenset(
    {"content", "text", "arguments", "description", "reasoning_content", "refusal"}
)

_TEMPLATE_MARKERS = ("{{", "{%", "{#")
_SINGLE_EXPRESSION = re.compile(r"^\{\{-?(.*?)-?\}\}$", re.DOTALL)

#: a compiled node of the request tree: the render context → the value at that place
Render = Callable[[Mapping[str, Any]], Any]


@dataclass(frozen=True, slots=True)
class TemplateRef:
    """One template string of the spec and what it refers to."""

    location: str
    source: str
    #: row columns it reads (by name or as row.x / row['x'])
    columns: frozenset[str]
    #: keys of ``vars`` it reads
    var_names: frozenset[str]
    #: reads ``row`` as a whole (``{{ row | tojson }}``), so it needs every column
    uses_whole_row: bool


@dataclass(frozen=True, slots=True)
class CompiledTree:
    """A request tree compiled once: ``render(context)`` builds the value for one row."""

    render: Render
    refs: tuple[TemplateRef, ...]
    #: syntax errors, one line each with its location; render must not be used when any
    problems: tuple[str, ...] = ()

    @property
    def is_static(self) -> bool:
        """True when no template occurs anywhere in the tree."""
        return not self.refs


# -- environment ----------------------------------------------------------------------------


@functools.cache
def make_environment(base_dir: str) -> jinja2.Environment:
    """The sandboxed, strict environment for a spec whose relative paths start at base_dir."""
    env = BoundedSandbox(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        finalize=_finalize,
    )
    env.filters["data_url"] = functools.partial(data_url, base_dir=base_dir)
    env.filters["image_parts"] = functools.partial(image_parts, base_dir=base_dir)
    env.filters["json"] = _to_json
    return env


def _finalize(value: Any) -> Any:
    # a null cell inside a sentence reads better as nothing than as "None", and a struct or
    # list column as JSON than as a Python repr
    if value is None:
        return ""
    return _to_json(value) if isinstance(value, dict | list | tuple) else value


def _to_json(value: Any) -> str:
    return orjson.dumps(jsonable(value), option=orjson.OPT_NON_STR_KEYS).decode()


# -- compiling ------------------------------------------------------------------------------


def compile_tree(
    value: Any, location: str, env: jinja2.Environment, *, key: str | int | None = None
) -> CompiledTree:
    """Compile a spec subtree (mapping, list, scalar, template string) into a renderer.

    Syntax errors do not raise: every one is listed in ``problems``, so a caller can
    report them together with its own findings.
    """
    refs: list[TemplateRef] = []
    problems: list[str] = []
    render = _compile(value, location, key, env, refs, problems)
    return CompiledTree(render=render, refs=tuple(refs), problems=tuple(problems))


def format_location(parent: str, key: str | int) -> str:
    """``request.messages`` + 1 → ``request.messages[1]``; + "content" → ``….content``."""
    return f"{parent}[{key}]" if isinstance(key, int) else f"{parent}.{key}"


def _compile(
    value: Any,
    location: str,
    key: str | int | None,
    env: jinja2.Environment,
    refs: list[TemplateRef],
    problems: list[str],
) -> Render:
    if isinstance(value, Mapping):
        items = [
            (str(k), _compile(v, format_location(location, str(k)), str(k), env, refs, problems))
            for k, v in value.items()
        ]
        return lambda ctx: {k: render(ctx) for k, render in items}
    if isinstance(value, list):
        parts = [
            _compile(v, format_location(location, i), i, env, refs, problems)
            for i, v in enumerate(value)
        ]
        return lambda ctx: [render(ctx) for render in parts]
    if isinstance(value, str) and any(marker in value for marker in _TEMPLATE_MARKERS):
        try:
            render, ref = _compile_string(value, location, key, env)
        except jinja2.TemplateSyntaxError as exc:
            problems.append(f"{location}: template syntax error: {exc.message} in {value!r}")
            return lambda ctx: None
        refs.append(ref)
        return render
    return _constant(value)


def _compile_string(
    source: str, location: str, key: str | int | None, env: jinja2.Environment
) -> tuple[Render, TemplateRef]:
    ast = env.parse(source)
    ref = _reference_of(ast, source, location, env)
    expression = _single_expression(ast, source)
    if expression is not None:
        evaluate = _compile_expression(expression, ast, env)
        return _guarded(_native(evaluate, key), location, source), ref
    fast = _fast_concat(ast)
    if fast is not None:
        return _guarded(fast, location, source), ref
    template = env.from_string(ast)
    return _guarded(lambda ctx: render_bounded(template, ctx), location, source), ref


def _single_expression(ast: nodes.Template, source: str) -> str | None:
    """The inner expression of a template that is exactly one ``{{ … }}``, else None."""
    if len(ast.body) != 1 or not isinstance(ast.body[0], nodes.Output):
        return None
    output = ast.body[0].nodes
    if len(output) != 1 or isinstance(output[0], nodes.TemplateData):
        return None
    match = _SINGLE_EXPRESSION.match(source.strip())
    return match.group(1) if match and source == source.strip() else None


def _compile_expression(expression: str, ast: nodes.Template, env: jinja2.Environment) -> Render:
    node = ast.body[0].nodes[0]  # type: ignore[attr-defined]
    lookup = _plain_lookup(node)
    if lookup is not None:
        return lookup
    compiled = env.compile_expression(expression, undefined_to_none=False)
    return lambda ctx: compiled(ctx)


def _plain_lookup(node: nodes.Node) -> Render | None:
    """``{{ name }}`` / ``{{ vars.x }}`` read straight from the context: no Jinja per row."""
    if isinstance(node, nodes.Name):
        name = node.name
        return lambda ctx: ctx[name] if name in ctx else _undefined(f"'{name}' is undefined")
    if (
        isinstance(node, nodes.Getattr)
        and isinstance(node.node, nodes.Name)
        and node.node.name in ("vars", "row")
    ):
        owner, attr = node.node.name, node.attr
        return lambda ctx: (
            ctx[owner][attr]
            if attr in ctx[owner]
            else _undefined(f"'{owner}' has no attribute '{attr}'")
        )
    return None


def _fast_concat(ast: nodes.Template) -> Render | None:
    """Text with only plain ``{{ name }}`` holes, joined without building a Jinja context."""
    if len(ast.body) != 1 or not isinstance(ast.body[0], nodes.Output):
        return None
    layout: list[str] = []
    lookups: list[Render] = []
    for node in ast.body[0].nodes:
        if isinstance(node, nodes.TemplateData):
            layout.append(node.data.replace("{", "{{").replace("}", "}}"))
            continue
        lookup = _plain_lookup(node)
        if lookup is None:
            return None
        layout.append("{}")
        lookups.append(lookup)
    text = "".join(layout)

    def render(ctx: Mapping[str, Any]) -> str:
        values = [lookup(ctx) for lookup in lookups]
        return text.format(*[v if type(v) is str else _as_text(v) for v in values])

    return render


def _constant(value: Any) -> Render:
    return lambda ctx: value


def _native(evaluate: Render, key: str | int | None) -> Render:
    stringify = key in STRING_FIELDS
    as_json = key in DATA_TEXT_FIELDS

    def render(ctx: Mapping[str, Any]) -> Any:
        value = evaluate(ctx)
        if isinstance(value, jinja2.Undefined):
            value._fail_with_undefined_error()
        if value is None:  # null, not "": the message rules then say which row has no content
            return None
        if not stringify:
            return jsonable(value)
        if not isinstance(value, list | dict | tuple):
            return _as_text(value)
        if as_json and not (key == "content" and is_part_list(value)):
            return _to_json(value)
        return jsonable(value)

    return render


def is_part_list(value: Any) -> bool:
    """A list of content parts (mappings with a known ``type``), or part lists to splice.

    An empty list counts: at ``content`` it is an empty part list, reported as such,
    not the text "[]" sent in silence.
    """
    return isinstance(value, list | tuple) and all(
        is_part_list(part)
        if isinstance(part, list | tuple)
        else isinstance(part, dict) and part.get("type") in PART_TYPES
        for part in value
    )


def _guarded(render: Render, location: str, source: str) -> Render:
    """Turn any failure of a template into a TemplateError with its place and row."""

    def guarded(ctx: Mapping[str, Any]) -> Any:
        try:
            return render(ctx)
        except Exception as exc:
            raise TemplateError(_explain(exc, location, source, ctx)) from None

    return guarded


def _explain(exc: Exception, location: str, source: str, ctx: Mapping[str, Any]) -> str:
    row_id = ctx.get("row_id")
    shown = source if len(source) <= 80 else source[:77] + "..."
    if isinstance(exc, jinja2.UndefinedError):
        message = f"{location}: {exc.message}"
        name = re.match(r"'([^']+)' is undefined", exc.message or "")
        columns = [k for k in ctx.get("row", {}) if isinstance(k, str)]
        if name and columns:
            message += did_you_mean(name.group(1), columns)
        elif not name:  # "'None' has no attribute 'x'": the template says which column
            message += f" in template {shown!r}"
    elif isinstance(exc, jinja2.exceptions.SecurityError):
        message = f"{location}: not allowed in a template: {exc}"
    else:
        message = f"{location}: {exc} in template {shown!r}"
    return f"{message} (row id {row_id!r})"


def did_you_mean(name: str, candidates: list[str]) -> str:
    """`` (did you mean 'text'?)`` for the closest candidates, or the known names."""
    lowered = {c.lower(): c for c in candidates}
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    if name.lower() in lowered and lowered[name.lower()] not in close:
        close.insert(0, lowered[name.lower()])
    if close:
        return f" (did you mean {' or '.join(repr(c) for c in close)}?)"
    shown = ", ".join(candidates[:12]) + (", …" if len(candidates) > 12 else "")
    return f" (columns: {shown})"


def _undefined(message: str) -> Any:
    raise jinja2.UndefinedError(message)


def _reference_of(
    ast: nodes.Template, source: str, location: str, env: jinja2.Environment
) -> TemplateRef:
    names = meta.find_undeclared_variables(ast) - set(env.globals)
    reads = _attribute_reads(ast)
    columns = (names - BUILTIN_NAMES) | {key for owner, key in reads if owner == "row"}
    var_names = {key for owner, key in reads if owner == "vars"}
    # row.x / row['x'] name their column; any other use of `row` needs every column
    keyed_row_reads = sum(owner == "row" for owner, _ in reads)
    row_names = sum(node.name == "row" for node in ast.find_all(nodes.Name))
    whole_row = "row" in names and row_names > keyed_row_reads
    return TemplateRef(location, source, frozenset(columns), frozenset(var_names), whole_row)


def _attribute_reads(ast: nodes.Template) -> list[tuple[str, str]]:
    """(owner, key) of every ``row.x``, ``row['x']``, ``vars.x``, ``vars['x']`` in a template."""
    reads: list[tuple[str, str]] = []
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        owner = getattr(node, "node", None)
        if not isinstance(owner, nodes.Name) or owner.name not in ("row", "vars"):
            continue
        if isinstance(node, nodes.Getattr):
            reads.append((owner.name, node.attr))
        elif isinstance(node, nodes.Getitem) and _is_text_constant(node.arg):
            reads.append((owner.name, node.arg.value))  # type: ignore[attr-defined]
    return reads


def _is_text_constant(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Const) and isinstance(node.value, str)


# -- values ---------------------------------------------------------------------------------


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, dict | list | tuple):
        return _to_json(value)
    return value if isinstance(value, str) else str(value)


def jsonable(value: Any) -> Any:
    """A template's native value as plain JSON data (dates → ISO text, Decimal → float)."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return str(value)
