"""Untrusted input, cut to a size fit to echo in an error, a warning or a log line.

A request may carry megabytes in any field and nest arrays hundreds deep; what goes back to
the client or into the logs is bounded, and never asks `repr` or a JSON writer to recurse.
"""

from __future__ import annotations

from typing import Any

LIMIT = 100
_KINDS = {dict: "object", list: "array", int: "number", float: "number"}


def clip(text: str, limit: int = LIMIT) -> str:
    """`text` itself when short, else its first `limit` characters and how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def shown(value: Any, limit: int = LIMIT) -> str:
    """A short description of any JSON value, for messages: repr of a clipped string or a
    scalar, and only the type of an array or an object."""
    if isinstance(value, str):
        return repr(clip(value, limit))
    if value is None or isinstance(value, bool | float):
        return repr(value)
    if isinstance(value, int) and abs(value) < 10**18:
        return repr(value)
    return f"a JSON {_KINDS.get(type(value), type(value).__name__)}"


def text(value: Any, limit: int = LIMIT) -> str:
    """A string field for a log line: clipped, or empty when it is not a string."""
    return clip(value, limit) if isinstance(value, str) else ""
