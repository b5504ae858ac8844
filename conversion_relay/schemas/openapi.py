"""marshmallow schemas built from an OpenAPI (JSON Schema) document kept as a data file.

Only the subset vendor documents use: objects with ``properties`` and ``required``, arrays,
strings (with ``enum``), numbers, integers, booleans, ``$ref`` to ``#/components/schemas/...``
and ``anyOf``.  Unknown properties are kept, as JSON Schema allows them by default.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from importlib import resources
from typing import Any

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate


@functools.cache
def load_document(name: str) -> dict[str, Any]:
    """A JSON data file of ``conversion_relay/schemas/data``."""
    return json.loads(resources.files("conversion_relay.schemas").joinpath(f"data/{name}").read_text())


class StrictNumber(fields.Float):
    """A JSON number; a string that looks like one is refused, as JSON Schema does."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float | int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValidationError("Not a number.")
        return value


class AnyOf(fields.Field):
    """Valid if one of the alternatives accepts the value; ``choose`` may pick it outright."""

    def __init__(
        self,
        alternatives: list[fields.Field],
        choose: Callable[[Any], fields.Field | None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.alternatives = alternatives
        self.choose = choose

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        chosen = self.choose(value) if self.choose else None
        if chosen is not None:
            return chosen.deserialize(value, attr, data)
        problems = []
        for alternative in self.alternatives:
            try:
                return alternative.deserialize(value, attr, data)
            except ValidationError as exc:
                problems.append(exc.messages)
        raise ValidationError({"_anyOf": ["Matches none of the allowed shapes."], "_closest": problems[0]})


class Builder:
    """Turns schema nodes of one document into marshmallow fields."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            path = node["$ref"].removeprefix("#/").split("/")
            target: Any = self.document
            for step in path:
                target = target[step]
            node = target
        return node

    def field(self, node: dict[str, Any], *, required: bool = False, name: str = "Object") -> fields.Field:
        node = self.resolve(node)
        if "anyOf" in node:
            return AnyOf([self.field(alternative) for alternative in node["anyOf"]], required=required)
        kind = node.get("type") or ("object" if "properties" in node or "required" in node else None)
        if kind == "object":
            return fields.Nested(self.schema(node, name), required=required)
        if kind == "array":
            return fields.List(self.field(node.get("items", {}), name=name), required=required)
        if kind == "string":
            choices = node.get("enum")
            return fields.String(required=required, validate=validate.OneOf(choices) if choices else None)
        if kind == "integer":
            return fields.Integer(required=required, strict=True)
        if kind == "number":
            return StrictNumber(required=required)
        if kind == "boolean":
            return fields.Boolean(required=required)
        return fields.Raw(required=required)

    def schema(self, node: dict[str, Any], name: str = "Object") -> Schema:
        node = self.resolve(node)
        required = set(node.get("required", ()))
        declared = {
            key: self.field(child, required=key in required, name=f"{name}.{key}")
            for key, child in node.get("properties", {}).items()
        }
        return Schema.from_dict(declared, name=name)(unknown=INCLUDE)
