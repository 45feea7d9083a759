"""YAML → :class:`JobSpec`: every problem of a file at once, each with its line and field path."""

from __future__ import annotations

import copy
import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from batchchat.errors import SpecError
from batchchat.spec.base import Strict
from batchchat.spec.model import JobSpec

# -- loading ------------------------------------------------------------------------------------

_Path = tuple[str | int, ...]


def load_spec(
    source: str | os.PathLike[str] | Mapping[str, Any],
    *,
    overrides: Mapping[str, Any] | None = None,
    variables: Mapping[str, str] | None = None,
) -> JobSpec:
    """Read and validate a job spec from a YAML file (or an already-parsed mapping).

    Every problem is reported at once, each with its file, line and field.

    Args:
        source: the job file, or a mapping (relative paths then resolve against the working
            directory unless it sets ``base_dir``).
        overrides: dotted keys applied before validation (``{"limits.rpm": 100}``).
        variables: ``--var`` values, merged over the spec's ``vars``.

    Raises:
        SpecError: the file cannot be read, is not valid YAML, or does not validate.
    """
    lines: dict[_Path, int] = {}
    if isinstance(source, Mapping):
        # a deep copy: the overrides set nested keys, and the caller's mapping is theirs
        data, where = copy.deepcopy(dict(source)), "<spec>"
        data.setdefault("name", "job")
    else:
        path = Path(source)
        where = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SpecError(f"cannot read job spec {path}: {exc.strerror}") from None
        data, lines = _parse_yaml(text, where)
        data.setdefault("name", path.stem)
        data.setdefault("base_dir", str(path.parent.resolve()))
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(data, dotted, value)
    if variables:
        data["vars"] = {**(data.get("vars") or {}), **variables}
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(err, where, lines) for err in exc.errors()]
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        raise SpecError(f"{where}: invalid job spec ({count}):", problems) from None


#: the most values a spec may hold once its aliases are expanded: a spec is a page of
#: settings, and ``&a [*b, *b, ...]`` nested ten deep would be a billion
MAX_SPEC_VALUES = 100_000


def _parse_yaml(text: str, where: str) -> tuple[dict[str, Any], dict[_Path, int]]:
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise SpecError(f"{where}:{line}: a NUL byte: a job spec is a text (YAML) file")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        _check_size(node, where)
        lines: dict[_Path, int] = {}
        _index_lines(node, (), lines, where)
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise SpecError(f"{where}{at}: not valid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{where}: not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise SpecError(f"{where}: a job spec is a YAML mapping (name:, input:, request:, ...)")
    return data, lines


def _check_size(root: yaml.Node | None, where: str) -> None:
    """Refuse a document whose aliases expand it past :data:`MAX_SPEC_VALUES` values."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node, visiting: frozenset[int]) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in visiting:
            raise SpecError(f"{where}:{node.start_mark.line + 1}: an alias that contains itself")
        inside = visiting | {id(node)}
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        total = 1 + sum(size(child, inside) for child in children)
        if total > MAX_SPEC_VALUES:
            raise SpecError(
                f"{where}: the spec expands to more than {MAX_SPEC_VALUES:,} values (aliases "
                "inside aliases?): refused"
            )
        sizes[id(node)] = total
        return total

    if root is not None:
        size(root, frozenset())


def _index_lines(node: yaml.Node | None, path: _Path, lines: dict[_Path, int], where: str) -> None:
    """Record the 1-based line of every key and list item, by its path in the document;
    a key given twice in one mapping is an error (YAML would keep the last in silence)."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            child = (*path, key_node.value)
            line = key_node.start_mark.line + 1
            if key_node.value in seen and key_node.value != "<<":
                field = ".".join(str(part) for part in child)
                raise SpecError(
                    f"{where}:{line}: {field}: given twice (first on line {seen[key_node.value]})"
                )
            seen[key_node.value] = line
            lines[child] = line
            _index_lines(value_node, child, lines, where)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = (*path, index)
            lines[child] = item.start_mark.line + 1
            _index_lines(item, child, lines, where)


def _describe(error: Any, where: str, lines: dict[_Path, int]) -> str:
    loc: _Path = tuple(part for part in error["loc"] if not _is_union_tag(part))
    field_path = ".".join(str(part) for part in loc) or "(top level)"
    line = _line_of(loc, lines)
    prefix = f"  {where}:{line}" if line else f"  {where}"
    if error["type"] == "extra_forbidden":
        known = _known_keys(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"{prefix}: {field_path}: unknown key{hint}"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "missing":
        message = "required key is missing"
    return f"{prefix}: {field_path}: {message}"


_TYPE_TAG = re.compile(r"(?:int|str|float|bool|list|dict)(?:\[.*\])?")


def _is_union_tag(part: str | int) -> bool:
    # pydantic puts the tried union member in the loc ("int", "SeedSpec", "list[str]"); drop
    # it for users -- but not user-chosen keys such as currency_rates.CNY or pricing.GPT-4o
    if not isinstance(part, str):
        return False
    models = {cls.__name__ for cls in Strict.__subclasses__()}
    return part in models or _TYPE_TAG.fullmatch(part) is not None


def _line_of(loc: _Path, lines: dict[_Path, int]) -> int | None:
    for end in range(len(loc), 0, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _known_keys(parent: _Path) -> list[str]:
    model: type[BaseModel] = JobSpec
    for part in parent:
        if isinstance(part, int):
            continue  # an item of a list of sections (endpoints[0]): the item's own keys
        annotation = model.model_fields.get(str(part))
        if annotation is None:
            return []
        nested = _model_in(annotation.annotation)
        if nested is None:
            return []
        model = nested
    return list(model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {} if child is None else dict(child)
            node[key] = child
        node = child
    node[leaf] = value
