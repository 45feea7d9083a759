"""The package's import graph: imports point down the pipeline and never form a cycle.

Imports inside functions count like any other: an import hidden in a function is still a
dependency, and a cycle through one is still a cycle. Imports under ``TYPE_CHECKING``
count for the direction (a lower stage may not even name a higher one's types) but not
for cycles: they never run, which is how a type is named without a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "batchchat"

#: the stages, lowest first; a module may import its own stage and the ones below it
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"errors", "models", "secrets", "_version"}),
    frozenset({"spec"}),
    frozenset({"pricing"}),
    frozenset({"planning"}),
    frozenset({"simulator"}),
    frozenset({"execute"}),
    # the response cache answers requests the executor then need not send: it reads
    # answers back through execute's parser, and the results only see a row marked cached
    frozenset({"cache"}),
    frozenset({"results"}),
    # the second executor: it writes through results' sink and keeps its state in the
    # output directory results lays out; the report and status read that state
    frozenset({"batchapi"}),
    frozenset({"labels"}),
    # the check of an answer (JSON, schema, label) is built from results' structured
    # output and labels' matching; the executor receives it as a plain function
    frozenset({"answers"}),
    frozenset({"report"}),
    frozenset({"job"}),
    # batchops: batch mode's commands beside run (cancel, import), wired as runs are
    # hooks: what the runner hands both executors (prices, budget, cache, re-asker)
    frozenset({"runner", "hooks", "batchops"}),
    frozenset({"cluster"}),
    frozenset({"api"}),
    frozenset({"cli", "__main__", "__init__"}),
)


def module_names() -> dict[str, Path]:
    """Dotted name → file of every module of the package."""
    found = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports_of(
    name: str, path: Path, modules: dict[str, Path], *, runtime_only: bool = False
) -> set[str]:
    """The package's modules that ``name`` imports, wherever in the file the import is
    (``runtime_only``: leaving out the ``if TYPE_CHECKING:`` blocks)."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    skipped = _type_checking_nodes(tree) if runtime_only else set()
    targets: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, name, is_package)
            # `from batchchat.report import svg` imports the module batchchat.report.svg
            submodules = {f"{base}.{alias.name}" for alias in node.names}
            targets.update(submodules)
            if not submodules <= set(modules):
                targets.add(base)  # a name defined in the package itself
    return {target for target in targets if target in modules and target != name}


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    """The ids of every node inside an ``if TYPE_CHECKING:`` block."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            inside.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    return inside


def _absolute(node: ast.ImportFrom, name: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = name.split(".")
    keep = len(parts) - node.level + (1 if is_package else 0)
    return ".".join([*parts[:keep], *([node.module] if node.module else [])])


def graph(*, runtime_only: bool = False) -> dict[str, set[str]]:
    modules = module_names()
    return {
        name: imports_of(name, path, modules, runtime_only=runtime_only)
        for name, path in modules.items()
    }


def layer_of(module: str) -> int:
    parts = module.split(".")
    stage = parts[1] if len(parts) > 1 else "__init__"
    for index, layer in enumerate(LAYERS):
        if stage in layer:
            return index
    raise AssertionError(f"{module} belongs to no layer: add its stage to LAYERS")


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules around it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_every_module_belongs_to_a_layer() -> None:
    for module in module_names():
        layer_of(module)


def test_imports_never_point_up_the_pipeline() -> None:
    upward = [
        f"{source} imports {target}"
        for source, targets in graph().items()
        for target in sorted(targets)
        if layer_of(target) > layer_of(source) and not _is_root_package(source)
    ]
    assert upward == []


def _is_root_package(module: str) -> bool:
    # `batchchat/__init__` is the public face: it (lazily) re-exports from every stage
    return module == PACKAGE


def test_there_is_no_import_cycle() -> None:
    assert find_cycle(graph(runtime_only=True)) is None


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
        ({"a": {"b"}, "b": {"c"}, "c": {"b"}}, ["b", "c", "b"]),
    ],
)
def test_find_cycle(edges: dict[str, set[str]], expected: list[str] | None) -> None:
    assert find_cycle(edges) == expected


def test_function_local_imports_count(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from batchchat.api import run\n")
    modules = {"batchchat.api": tmp_path, "batchchat.m": module}
    assert imports_of("batchchat.m", module, modules) == {"batchchat.api"}


def test_type_checking_imports_count_only_for_the_direction(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("if TYPE_CHECKING:\n    from batchchat.api import run\n")
    modules = {"batchchat.api": tmp_path, "batchchat.m": module}
    assert imports_of("batchchat.m", module, modules) == {"batchchat.api"}
    assert imports_of("batchchat.m", module, modules, runtime_only=True) == set()


def test_the_package_root_holds_at_most_twelve_modules() -> None:
    top = [p.name for p in (SRC / PACKAGE).glob("*.py")]
    assert len(top) <= 12, sorted(top)


def test_every_subpackage_says_its_job() -> None:
    for init in (SRC / PACKAGE).glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        summary = " ".join(doc.split("\n\n")[0].split())
        assert summary.endswith(".") and ". " not in summary, (
            f"{init}: the package's job in one sentence first, got {summary!r}"
        )


def test_no_module_is_longer_than_400_lines() -> None:
    long = {
        str(path.relative_to(SRC)): lines
        for path in (SRC / PACKAGE).rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > 400
    }
    assert long == {}
