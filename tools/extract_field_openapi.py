"""One-off developer tool: extract Gravity Field's OpenAPI document for `POST /ssapi/event`.

Not used at run or test time. It was run once to produce
`conversion_relay/schemas/data/gravity_field_openapi.json`, which the Gravity Field sandbox
validates requests against; re-run it only if the vendor page changes:

    python tools/extract_field_openapi.py SEED_PATH OUT_PATH

SEED_PATH is the stored vendor page (Russian, "Передача событий") holding a
single ```json block with the complete OpenAPI 3.0.3 document. The output keeps
the document's structure and every machine-checkable keyword and drops prose
(`description`, `title`, `summary`, `example(s)`, `tags`, `externalDocs`)
with a recursive filter, so the data is the vendor's own and never retyped.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

#: Keys whose values are human prose, dropped wherever they appear as keywords.
PROSE_KEYS = frozenset({"description", "title", "summary", "example", "examples", "tags", "externalDocs"})
#: Keywords whose value maps arbitrary names (properties, schemas, paths...) to objects: the
#: names there are data, so a property called "title" survives; only their values are filtered.
NAME_MAPS = frozenset({"properties", "schemas", "paths", "responses", "content", "securitySchemes", "requestBodies"})

_JSON_BLOCK = re.compile(r"^```json[ \t]*\n(.*?)\n```[ \t]*$", re.DOTALL | re.MULTILINE)


def extract_document(text: str) -> dict[str, Any]:
    """Parse the page's only ```json block; refuse anything ambiguous rather than guess."""
    blocks = _JSON_BLOCK.findall(text)
    if len(blocks) != 1:
        raise ValueError(f"expected exactly one ```json block in the seed, found {len(blocks)}")
    document = json.loads(blocks[0])
    if not isinstance(document, dict) or not str(document.get("openapi", "")).startswith("3."):
        raise ValueError("the ```json block is not an OpenAPI 3 document")
    return document


def strip_prose(node: Any, names: bool = False) -> Any:
    """Drop prose keywords recursively; `names` marks a mapping whose keys are names, not keywords."""
    if isinstance(node, list):
        return [strip_prose(item) for item in node]
    if not isinstance(node, dict):
        return node
    if names:
        return {name: strip_prose(value) for name, value in node.items()}
    return {
        key: strip_prose(value, names=key in NAME_MAPS and isinstance(value, dict))
        for key, value in node.items()
        if key not in PROSE_KEYS
    }


def prose_paths(node: Any, path: str = "$", names: bool = False) -> list[str]:
    """Where prose keywords remain; the tool refuses to write output with any."""
    found: list[str] = []
    if isinstance(node, list):
        for index, item in enumerate(node):
            found += prose_paths(item, f"{path}[{index}]")
    elif isinstance(node, dict):
        for key, value in node.items():
            if not names and key in PROSE_KEYS:
                found.append(f"{path}.{key}")
            found += prose_paths(value, f"{path}.{key}", names=not names and key in NAME_MAPS)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seed_path", type=Path)
    parser.add_argument("out_path", type=Path)
    args = parser.parse_args(argv)
    document = strip_prose(extract_document(args.seed_path.read_text(encoding="utf-8")))
    leftover = prose_paths(document)
    if leftover:
        print(f"prose left after filtering: {leftover}", file=sys.stderr)
        return 1
    text = json.dumps(document, sort_keys=True, indent=1, ensure_ascii=False) + "\n"
    args.out_path.write_text(text, encoding="utf-8")
    print(f"wrote {args.out_path} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
