"""A small JSON-schema checker for the subset of OpenAPI 3.0 that vendor documents use.

Written for the sandboxes so they judge requests by the vendor's published
schema, not by the relay's own validation. Supported: `$ref` to `#/...`
pointers, `type` (string, number, integer, boolean, array, object), `nullable`,
`enum`, `required`, `properties` (additional properties allowed), `items` and
`anyOf`. `format` is informational in these documents and is not checked.
"""

from __future__ import annotations

from typing import Any

_TYPE_WORDS = {
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "a boolean",
    "array": "an array",
    "object": "an object",
}

#: A problem is (path, message); the path uses `a.b[0].c`, with "body" for the root.
Problem = tuple[str, str]


def _is_type(value: Any, name: str) -> bool:
    if name == "string":
        return isinstance(value, str)
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "array":
        return isinstance(value, list)
    if name == "object":
        return isinstance(value, dict)
    raise ValueError(f"unsupported schema type {name!r}")


def join(path: str, key: str) -> str:
    """Child path of an object member; the root's children have no prefix."""
    return f"{path}.{key}" if path else key


def _depth(problem: Problem) -> tuple[int, bool]:
    """Rank anyOf failures: the deepest path, and a wrong value over a missing one, is most telling."""
    path, message = problem
    return path.count(".") + path.count("["), message != "required"


class SchemaChecker:
    """Checks JSON values against schemas that may `$ref` into one OpenAPI document."""

    def __init__(self, document: dict[str, Any]) -> None:
        self._document = document

    def resolve(self, ref: str) -> dict[str, Any]:
        """Follow a local JSON pointer such as `#/components/schemas/user`."""
        if not ref.startswith("#/"):
            raise ValueError(f"only local $ref pointers are supported, got {ref!r}")
        node: Any = self._document
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def check(self, value: Any, schema: dict[str, Any], path: str = "") -> str | None:
        """Return the first problem as '<path>: <problem>', or None when the value is valid."""
        problem = self.problem(value, schema, path)
        return None if problem is None else f"{problem[0] or 'body'}: {problem[1]}"

    def problem(self, value: Any, schema: dict[str, Any], path: str = "") -> Problem | None:
        if "$ref" in schema:
            return self.problem(value, self.resolve(schema["$ref"]), path)
        if value is None and schema.get("nullable"):
            return None
        if "anyOf" in schema:
            failures = []
            for alternative in schema["anyOf"]:
                failure = self.problem(value, alternative, path)
                if failure is None:
                    break
                failures.append(failure)
            else:
                return max(failures, key=_depth)
        expected = schema.get("type")
        if expected is not None and not _is_type(value, expected):
            return path, f"must be {_TYPE_WORDS[expected]}"
        if "enum" in schema and not any(value == item and type(value) is type(item) for item in schema["enum"]):
            return path, "must be one of " + ", ".join(str(item) for item in schema["enum"])
        if isinstance(value, dict):
            for key in schema.get("required", ()):
                if key not in value:
                    return join(path, key), "required"
            for key, subschema in schema.get("properties", {}).items():
                if key in value:
                    failure = self.problem(value[key], subschema, join(path, key))
                    if failure is not None:
                        return failure
        if isinstance(value, list) and "items" in schema:
            for index, item in enumerate(value):
                failure = self.problem(item, schema["items"], f"{path}[{index}]")
                if failure is not None:
                    return failure
        return None
