"""The reference pages that the code says better than people: the job spec and the CLI.

``docs/reference/spec.md`` is generated from the pydantic models in ``batchchat.spec``
(each key's type, default and the ``#:`` comment above it) and ``docs/reference/cli.md``
from the click commands (the text ``--help`` shows). Both are checked in, so they read
on GitHub and show up in review next to the code change that made them; a test (and the
site build) fails when they are stale::

    python docs/_gen/reference.py           # rewrite the pages
    python docs/_gen/reference.py --check   # exit 1, naming them, when they are stale

Only core dependencies are needed (click, pydantic), so the staleness check runs in the
plain test environment, without the ``docs`` extra.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import re
import sys
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import annotated_types
import click
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

DOCS = Path(__file__).resolve().parents[1]
REGENERATE = "python docs/_gen/reference.py"


def banner(source: str) -> str:
    """The comment at the top of a generated page: where it comes from, how to remake it."""
    return (
        f"<!-- Generated from {source} by docs/_gen/reference.py: do not edit by hand.\n"
        f"     Regenerate with: {REGENERATE} -->\n"
    )


# -- text ---------------------------------------------------------------------------------------

_CODE = re.compile(r"(``?)(.+?)\1")


def markdown(text: str) -> str:
    """Docstring text as Markdown: ``code`` → `code`; ``<`` outside code escaped."""
    out, end = [], 0
    for match in _CODE.finditer(text):
        out.append(text[end : match.start()].replace("<", "&lt;"))
        out.append(f"`{match.group(2)}`")
        end = match.end()
    out.append(text[end:].replace("<", "&lt;"))
    return "".join(out)


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


# -- the job spec -------------------------------------------------------------------------------


class FieldDoc(typing.NamedTuple):
    """What a ``#:`` comment says about a field: its meaning and, optionally, its default."""

    meaning: str
    default: str | None


def field_docs(model: type[BaseModel]) -> dict[str, FieldDoc]:
    """The ``#:`` comments of every field of ``model``, its inherited ones too (a pool's
    endpoint is an ``EndpointSpec`` and more): the nearest class that declares a field says."""
    docs: dict[str, FieldDoc] = {}
    for cls in reversed(model.__mro__):
        # pydantic's own classes declare no fields of a spec (and their source is not ours)
        if issubclass(cls, BaseModel) and not cls.__module__.startswith("pydantic"):
            docs.update(own_field_docs(cls))
    return docs


def own_field_docs(model: type[BaseModel]) -> dict[str, FieldDoc]:
    """The ``#:`` comment lines right above each field ``model`` declares, by field name.

    A line ``#: default: …`` says the default in words, where the declared one (``None``,
    a placeholder filled in later) would mislead.
    """
    source_file = inspect.getsourcefile(model)
    assert source_file is not None
    lines = Path(source_file).read_text(encoding="utf-8").splitlines()
    tree = ast.parse("\n".join(lines))
    body = next(
        node.body
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef) and node.name == model.__name__
    )
    docs: dict[str, FieldDoc] = {}
    for statement in body:
        if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
            continue
        comment: list[str] = []
        row = statement.lineno - 2
        while row >= 0 and lines[row].strip().startswith("#:"):
            comment.insert(0, lines[row].strip().removeprefix("#:").strip())
            row -= 1
        default = [line.removeprefix("default:").strip() for line in comment if _is_default(line)]
        meaning = " ".join(line for line in comment if not _is_default(line))
        docs[statement.target.id] = FieldDoc(meaning, default[0] if default else None)
    return docs


def _is_default(line: str) -> bool:
    return line.startswith("default:")


def nested_model(annotation: Any) -> type[BaseModel] | None:
    """The spec model inside an annotation (``X | None``, ``dict[str, X]``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = nested_model(arg)
        if found is not None:
            return found
    return None


def is_mapping_of_models(annotation: Any) -> bool:
    """``dict[str, SomeSpec]``: the section's keys are names the user chooses."""
    return typing.get_origin(annotation) is dict and nested_model(annotation) is not None


def anchor(path: str) -> str:
    """The anchor of a section, ``endpoint.simulator`` → ``endpoint-simulator``."""
    return re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-") or "top-level"


_SCALARS = {str: "text", int: "integer", float: "number", bool: "`true` or `false`"}


#: each section's model → the path where its table is (see :func:`section_homes`)
Homes = Mapping[type[BaseModel], str]


def type_text(annotation: Any, path: str, homes: Homes | None = None) -> str:
    """An annotation in words, linking a nested section to its table (at ``path``, or at
    the section's home in ``homes``)."""
    homes = homes or {}
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    if annotation is Any:
        return "any value"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(f"`{value}`" for value in args)
    if origin in (typing.Union, types.UnionType):
        shown = [type_text(arg, path, homes) for arg in args if arg is not type(None)]
        return ", or ".join(shown)
    if origin is list:
        return f"list of {type_text(args[0], path, homes)}"
    if origin is dict:
        nested = nested_model(args[1])
        if nested is not None:
            section = homes.get(nested, f"{path}.<name>")
            return f"mapping of name → [`{section}`](#{anchor(section)})"
        if args[1] is Any:
            return "mapping"
        return f"mapping of {type_text(args[0], path)} → {type_text(args[1], path)}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        section = homes.get(annotation, path)
        return f"mapping, see [`{section}`](#{anchor(section)})"
    raise ValueError(f"{path}: no wording for the type {annotation!r}: teach type_text")


def bounds_text(field: FieldInfo) -> str:
    """The field's numeric bounds in words (``≥ 1``, ``> 0``, ``0 to 1``), or nothing."""
    whole = nested_int(field.annotation)
    low = high = None
    strict = False
    for rule in field.metadata:
        if isinstance(rule, annotated_types.Gt):
            low, strict = rule.gt, not whole
            low = low + 1 if whole else low
        elif isinstance(rule, annotated_types.Ge):
            low = rule.ge
        elif isinstance(rule, annotated_types.Le):
            high = rule.le
    if low is not None and high is not None and not strict:
        return f"{low} to {high}"
    if low is not None:
        return f"> {low}" if strict else f"≥ {low}"
    return f"≤ {high}" if high is not None else ""


def nested_int(annotation: Any) -> bool:
    """Whether the annotation is ``int`` (or ``int | None``): bounds read as whole numbers."""
    return annotation is int or int in typing.get_args(annotation)


def default_text(field: FieldInfo, said: str | None) -> str:
    """The default as a user would write it, or what the comment says it is."""
    if said is not None:
        return markdown(said)
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "**required**"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "the defaults below"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    if value in ({}, []):
        return f"`{value}`"
    return f"`{value}`"


def spec_sections(model: type[BaseModel], path: str = "") -> Iterator[tuple[str, type[BaseModel]]]:
    """``(dotted path, model)`` of the spec and every section inside it, depth first, each
    section once, at its home: the simulator of ``endpoint`` and of each pool member is one
    table, not two."""
    homes = section_homes(model, path)
    for where, section in _every_section(model, path):
        if homes[section] == where:
            yield where, section


def section_homes(model: type[BaseModel], path: str = "") -> dict[type[BaseModel], str]:
    """Where each section's table is: of the paths that reach its model, the one nearest
    the top (the first of those, depth first)."""
    homes: dict[type[BaseModel], str] = {}
    for where, section in _every_section(model, path):
        home = homes.get(section)
        if home is None or where.count(".") < home.count("."):
            homes[section] = where
    return homes


def _every_section(model: type[BaseModel], path: str) -> Iterator[tuple[str, type[BaseModel]]]:
    yield path, model
    for name, field in model.model_fields.items():
        nested = nested_model(field.annotation)
        if nested is None:
            continue
        child = f"{path}.{name}" if path else name
        if is_mapping_of_models(field.annotation):
            child += ".<name>"
        yield from _every_section(nested, child)


def spec_table(path: str, model: type[BaseModel], homes: Homes | None = None) -> list[str]:
    """The Markdown of one section: its heading, its docstring and a row per key (a nested
    section linked to its home in ``homes``)."""
    title = f"`{path}`" if path else "Top level"
    lines = [f"## {title} {{#{anchor(path)}}}", ""]
    intro = model.__dict__.get("__doc__")
    if intro and path:
        lines += [markdown(inspect.cleandoc(intro).replace("\n", " ")), ""]
    lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
    docs = field_docs(model)
    for name, field in model.model_fields.items():
        key = f"{path}.{name}" if path else name
        doc = docs.get(name)
        if doc is None or not doc.meaning:
            raise ValueError(
                f"{model.__name__}.{name} ({key}) has no #: comment saying what it means; "
                "add one above the field in src/batchchat/spec/"
            )
        kind = type_text(field.annotation, key, homes)
        bounds = bounds_text(field)
        kind = f"{kind} ({bounds})" if bounds else kind
        row = [f"`{key}`", kind, default_text(field, doc.default), markdown(doc.meaning)]
        lines.append("| " + " | ".join(cell(part) for part in row) + " |")
    return [*lines, ""]


def spec_page() -> str:
    """docs/reference/spec.md."""
    from batchchat.spec import JobSpec

    lines = [
        banner("the pydantic models in src/batchchat/spec/"),
        "# Job spec reference",
        "",
        "Every key of a job file: its type, its default and what it means. This page is "
        "generated from the spec models themselves, so it is exactly what `batchchat "
        "validate` checks. A tour of a job file, with an example that uses every key, is "
        "[The job file](../job.md).",
        "",
    ]
    homes = section_homes(JobSpec)
    for path, model in spec_sections(JobSpec):
        lines += spec_table(path, model, homes)
    return "\n".join(lines).rstrip() + "\n"


# -- the command line ---------------------------------------------------------------------------

#: command → the guide pages that explain it (links from the CLI reference)
SEE_ALSO = {
    "run": [
        ("Getting started", "../getting-started.md"),
        ("Sending requests", "../execution.md"),
        ("Batch API mode", "../batch.md"),
    ],
    "validate": [("Checking a job", "../job.md#checking-a-job-before-you-run-it")],
    "plan": [
        ("Checking a job", "../job.md#checking-a-job-before-you-run-it"),
        ("Cost bounds", "../report.md#before-you-run-cost-bounds"),
    ],
    "simulate": [("The simulator", "../simulator.md")],
    "report": [("Cost and the report", "../report.md#batchchat-report")],
    "export": [("Output", "../output.md#batchchat-export")],
    "status": [("Output", "../output.md#batchchat-status"), ("Scheduling", "../scheduling.md")],
    "cancel": [("Batch API mode", "../batch.md#status-and-cancel")],
    "import": [("Batch API mode", "../batch.md#results-made-elsewhere-import")],
    "cache": [("The response cache", "../cache.md#the-response-cache")],
}


def help_markdown(text: str) -> list[str]:
    """A click help text as Markdown: paragraphs joined; ``\\b`` blocks kept as they are."""
    lines: list[str] = []
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        if paragraph.startswith("\b"):
            block = paragraph.removeprefix("\b").strip("\n")
            lines += ["```text", block, "```", ""]
        else:
            lines += [markdown(" ".join(paragraph.split())), ""]
    return lines


def option_rows(
    command: click.Command, ctx: click.Context, extra: Callable[[str], str]
) -> list[str]:
    """One table row per option: its flags and its help, as ``--help`` prints them."""
    rows = ["| option | meaning |", "|---|---|"]
    for param in command.get_params(ctx):
        if not isinstance(param, click.Option):
            continue  # arguments are in the usage line
        record = param.get_help_record(ctx)
        if record is None:
            continue
        flags, meaning = record
        meaning = markdown(meaning) + extra(param.name or "")
        rows.append(f"| `{cell(flags)}` | {cell(meaning)} |")
    return rows


def command_section(name: str, command: click.Command, parent: click.Context) -> list[str]:
    """The Markdown of one command: usage, help, options and links to its guides."""
    ctx = click.Context(command, info_name=name, parent=parent)
    usage = " ".join([ctx.command_path, *command.collect_usage_pieces(ctx)])
    lines = [f"## `batchchat {name}` {{#batchchat-{name}}}", "", "```text", usage, "```", ""]
    lines += help_markdown(command.help or "")
    lines += option_rows(command, ctx, _simulator_key if name == "simulate" else _nothing)
    guides = SEE_ALSO.get(name)
    if guides is None:
        raise ValueError(f"the command {name!r} has no guide in SEE_ALSO: add one")
    links = ", ".join(f"[{title}]({target})" for title, target in guides)
    return [*lines, "", f"See also: {links}.", ""]


def _nothing(_: str) -> str:
    return ""


def _simulator_key(param: str) -> str:
    from batchchat.cli.simulate import spec_keys

    key = spec_keys().get(param)
    if key is None:
        return ""
    full = f"endpoint.simulator.{key}"
    return f" Job key: [`{full}`](spec.md#{anchor(full.rsplit('.', 1)[0])})."


def cli_page() -> str:
    """docs/reference/cli.md."""
    from batchchat.cli import main

    root = click.Context(main, info_name="batchchat", **main.context_settings)
    names = main.list_commands(root)
    lines = [
        banner("the click commands in src/batchchat/cli/"),
        "# CLI reference",
        "",
        "Every command and option of `batchchat`, generated from the commands themselves: "
        "the same text `batchchat COMMAND --help` prints. `python -m batchchat` works "
        "wherever `batchchat` does.",
        "",
        "## `batchchat` {#batchchat}",
        "",
        "```text",
        " ".join(["batchchat", *main.collect_usage_pieces(root)]),
        "```",
        "",
        *help_markdown(main.help or ""),
        "| command | what it does |",
        "|---|---|",
    ]
    commands = {name: main.get_command(root, name) for name in names}
    for name, command in commands.items():
        assert command is not None
        summary = command.get_short_help_str(limit=200)
        lines.append(f"| [`{name}`](#batchchat-{name}) | {cell(markdown(summary))} |")
    lines += ["", *option_rows(main, root, _nothing), ""]
    for name, command in commands.items():
        assert command is not None
        lines += command_section(name, command, root)
    return "\n".join(lines).rstrip() + "\n"


# -- writing and checking -----------------------------------------------------------------------

PAGES: dict[str, Callable[[], str]] = {
    "reference/spec.md": spec_page,
    "reference/cli.md": cli_page,
}


def stale_pages(docs: Path = DOCS) -> list[str]:
    """The generated pages whose file differs from what the code says now."""
    stale = []
    for page, render in PAGES.items():
        path = docs / page
        if not path.is_file() or path.read_text(encoding="utf-8") != render():
            stale.append(page)
    return stale


def write_pages(docs: Path = DOCS) -> list[str]:
    """Rewrite every generated page; returns the ones that changed."""
    changed = []
    for page, render in PAGES.items():
        path = docs / page
        text = render()
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            changed.append(page)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only say which pages are stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_pages()
        for page in stale:
            print(f"docs/{page} is stale: regenerate it with {REGENERATE}", file=sys.stderr)
        return 1 if stale else 0
    for page in write_pages():
        print(f"wrote docs/{page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
