"""The package's shape (issue 10): one import package, no import cycles, no imports hidden in
functions to dodge one, and dependencies that point one way between its parts.

Read from the source with :mod:`ast`, so a cycle that only a particular import order would
reveal is found too.  ``if TYPE_CHECKING:`` blocks are left out: they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "conversion_relay"

#: What each part may import besides itself.  Read top to bottom: lower parts never import
#: higher ones.  ``cli``, ``demo``, ``embedded`` and ``samples`` sit on top and may use anything.
ALLOWED = {
    "version": set(),
    "errors": set(),
    "masking": set(),
    "outcomes": {"masking"},
    "schemas": {"errors"},
    "vendors": {"errors", "masking", "outcomes", "schemas"},
    "store": {"errors", "masking", "outcomes"},
    "sandbox": {"errors", "schemas", "vendors"},
    # config -> sandbox: the built-in configuration (CONVERSION_RELAY_CONFIG=sandbox) takes each
    # vendor's mount and wiring from the sandbox registry; sandbox imports none of config's users.
    "config": {"errors", "sandbox", "schemas", "store", "vendors"},
    "client": {"config", "errors", "schemas", "store", "vendors"},
    "sentry": {"masking", "schemas"},
    "engine": {"config", "errors", "masking", "outcomes", "store", "vendors"},
    "ops": {"config", "errors", "masking", "schemas", "store", "vendors"},
    "worker": {"config", "engine", "errors", "masking", "store"},
    "tasks": {"client", "config", "engine", "errors", "ops", "schemas", "store", "worker"},
    "testing": {"client", "config", "errors", "schemas", "store", "vendors"},
    "contrib": {"client", "config", "errors", "testing"},
    "console": {"config", "errors", "masking", "ops", "store", "version"},
}
#: Leaves any part may import.
EVERYONE = {"version"}
#: Parts whose functions may import lazily: the command line imports only what a command needs,
#: so that ``conversion-relay --help`` does not load Celery.
LAZY_IMPORTS_ALLOWED = {"cli"}


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = modules()


def part_of(module: str) -> str:
    """``conversion_relay.engine.drain`` -> ``engine``; ``conversion_relay.errors`` -> ``errors``."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "conversion_relay"


def resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str) -> list[tuple[str, bool]]:
    """``(imported module, inside a function)`` for every import of the package's own modules."""
    path = MODULES[module]
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                    base = ".".join(here[: len(here) - child.level + 1] + ([base] if base else []))
                names = [base] + [f"{base}.{alias.name}" for alias in child.names]
            for name in names:
                target = resolve(name) if name.startswith("conversion_relay") else None
                if target and target != module:
                    found.append((target, in_function))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(ast.parse(path.read_text()), False)
    return found


GRAPH = {module: {target for target, _ in imports(module)} for module in MODULES}


def test_the_repository_holds_one_import_package():
    """The wheel installs ``conversion_relay`` alone: no ``worker``, ``tasks``, ``schemas`` or
    ``sandbox`` beside it to collide with a web app's own packages."""
    top = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    assert top <= {"conversion_relay", "tests", "bench"}, top
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'include = ["conversion_relay*"]' in pyproject


def test_no_module_imports_itself_through_others():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            connect(module)
    assert cycles == []


def test_no_import_is_hidden_in_a_function_outside_the_command_line():
    hidden = sorted(
        f"{module} -> {target}"
        for module in MODULES
        if part_of(module) not in LAZY_IMPORTS_ALLOWED
        for target, in_function in imports(module)
        if in_function
    )
    assert hidden == []


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_dependencies_point_one_way(part: str):
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        if part_of(module) == part
        for target in targets
        if part_of(target) != part and part_of(target) not in ALLOWED[part] | EVERYONE
    )
    assert wrong == [], f"{part} may import only {sorted(ALLOWED[part])}"


def test_every_part_of_the_package_has_a_rule():
    parts = {part_of(m) for m in MODULES} - {"conversion_relay", "cli", "demo", "embedded", "samples"}
    assert parts <= set(ALLOWED), parts - set(ALLOWED)


def test_docs_layout_names_every_module():
    """docs/layout.md's tree is the map a reader starts from: no module may be missing from it."""
    text = (ROOT / "docs" / "layout.md").read_text()
    missing = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name != "__init__.py" and f" {path.name} " not in text.replace("\n", " \n")
    )
    assert missing == [], f"add these to docs/layout.md (python tools/layout_tree.py prints the tree): {missing}"
