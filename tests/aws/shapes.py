"""Check a value against a botocore shape: required members, types, enums, lengths, ranges and
patterns, which botocore's own client-side validation leaves partly unchecked."""

from __future__ import annotations

from typing import Any

import regex
from botocore.model import Shape

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "long": (int,),
    "float": (int, float),
    "double": (int, float),
    "timestamp": (int, float, str),
    "blob": (str,),
}


def problems(shape: Shape, value: Any, path: str = "") -> list[str]:
    """Every way `value` breaks `shape`, as AWS words its ValidationException."""
    where = path or shape.name
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            return [f"Value at '{where}' failed to satisfy constraint: must be a structure"]
        found = [
            f"Value null at '{_join(path, m)}' failed to satisfy constraint: "
            "Member must not be null"
            for m in shape.required_members
            if m not in value
        ]
        for name, item in value.items():
            if name not in shape.members:
                found.append(f"Unknown member '{_join(path, name)}'")
            else:
                found += problems(shape.members[name], item, _join(path, name))
        return found
    if kind == "list":
        if not isinstance(value, list):
            return [f"Value at '{where}' failed to satisfy constraint: must be a list"]
        found = _length(shape, len(value), where)
        for i, item in enumerate(value):
            found += problems(shape.member, item, f"{where}.{i + 1}")
        return found
    if kind == "map":
        if not isinstance(value, dict):
            return [f"Value at '{where}' failed to satisfy constraint: must be a map"]
        return [
            p
            for k, v in value.items()
            for p in problems(shape.key, k, where) + problems(shape.value, v, where)
        ]
    if not isinstance(value, _TYPES.get(kind, (object,))) or (
        kind in ("integer", "long") and isinstance(value, bool)
    ):
        return [
            f"Value '{value}' at '{where}' failed to satisfy constraint: Member must be a {kind}"
        ]
    found = []
    if kind == "string":
        found += _length(shape, len(value), where)
        enum = shape.metadata.get("enum")
        if enum and value not in enum:
            found.append(
                f"Value '{value}' at '{where}' failed to satisfy constraint: "
                f"Member must satisfy enum value set: [{', '.join(enum)}]"
            )
        pattern = shape.metadata.get("pattern")
        if pattern and not regex.fullmatch(pattern, value):
            found.append(
                f"Value '{value}' at '{where}' failed to satisfy constraint: "
                f"Member must satisfy regular expression pattern: {pattern}"
            )
    if kind in ("integer", "long", "float", "double"):
        found += _bounds(shape, value, where, "value")
    return found


def _length(shape: Shape, length: int, where: str) -> list[str]:
    return _bounds(shape, length, where, "length")


def _bounds(shape: Shape, measured: float, where: str, what: str) -> list[str]:
    """The model's min and max, on a string's or list's length or on a number's value."""
    found = []
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if low is not None and measured < low:
        found.append(
            f"Value at '{where}' failed to satisfy constraint: "
            f"Member must have {what} greater than or equal to {low}"
        )
    if high is not None and measured > high:
        found.append(
            f"Value at '{where}' failed to satisfy constraint: "
            f"Member must have {what} less than or equal to {high}"
        )
    return found


def _join(path: str, member: str) -> str:
    name = member[:1].lower() + member[1:]
    return f"{path}.{name}" if path else name
