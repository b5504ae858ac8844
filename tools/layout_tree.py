"""Print the package tree with each module's first docstring line, for docs/layout.md.

    python tools/layout_tree.py > /tmp/tree.txt   # then paste the tree into docs/layout.md

docs/layout.md is written by hand around the tree; tests/test_layout.py checks that it names
every module of the package, so a new module cannot go unmentioned.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def summary(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    first = doc.strip().split("\n\n")[0].replace("\n", " ")
    return first.split(". ")[0].rstrip(".")


def tree(directory: Path, depth: int = 0) -> list[str]:
    lines = []
    for path in sorted(directory.iterdir(), key=lambda p: (p.is_dir(), p.name)):
        if path.name.startswith(("_", ".")) and path.name != "__main__.py" or path.name == "data":
            continue
        indent = "    " * depth
        if path.is_dir() and (path / "__init__.py").exists():
            lines.append(f"{indent}{path.name}/  {summary(path / '__init__.py')}")
            lines += tree(path, depth + 1)
        elif path.suffix == ".py":
            lines.append(f"{indent}{path.name:<18}{summary(path)}")
    return lines


if __name__ == "__main__":
    print("conversion_relay/")
    print("\n".join("    " + line for line in tree(ROOT / "conversion_relay")))
