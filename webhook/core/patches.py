"""A JSON Patch, kept as the JSON it is sent as.

Entries appended to a list come already written and are joined to the list's pointer
(`extend`), so a wide Pod's containers, which share nearly all of theirs, do not each build and
serialise them as operations again; other operations are kept as made. Read back, it is the
operations themselves (a `Sequence`), for tests and offline injection.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, overload

import orjson

Op = dict[str, Any]


def written(value: Any) -> str:
    """`value` as JSON text: for entries written once and appended in many places."""
    return orjson.dumps(value).decode()


class Patch(Sequence[Op]):
    """Operations in order; `json()` is the patch the answer carries."""

    __slots__ = ("_parts", "_size")

    def __init__(self) -> None:
        # An operation, or a run of them already written (one JSON array's items).
        self._parts: list[Op | orjson.Fragment] = []
        self._size = 0

    def add(self, path: str, value: Any, op: str = "add") -> None:
        self._parts.append({"op": op, "path": path, "value": value})
        self._size += 1

    def extend(self, pointer: str, items: list[str], exists: bool) -> None:
        """Append `items` (each written JSON) to the list at `pointer`, or create the list with
        them when it does not `exist`. `pointer` is one of ours, built from fixed names and
        indexes: nothing in it needs escaping."""
        if not items:
            return
        if not exists:
            ops = f'{{"op":"add","path":"{pointer}","value":[{",".join(items)}]}}'
            self._size += 1
        else:
            head = f'{{"op":"add","path":"{pointer}/-","value":'
            ops = head + ("}," + head).join(items) + "}"
            self._size += len(items)
        self._parts.append(orjson.Fragment(ops))

    def json(self) -> bytes:
        return orjson.dumps(self._parts)

    def ops(self) -> list[Op]:
        ops: list[Op] = orjson.loads(self.json())
        return ops

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops())

    @overload
    def __getitem__(self, index: int) -> Op: ...

    @overload
    def __getitem__(self, index: slice) -> list[Op]: ...

    def __getitem__(self, index: int | slice) -> Op | list[Op]:
        return self.ops()[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Patch):
            return self.ops() == other.ops()
        if isinstance(other, list):
            return self.ops() == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Patch({self.ops()!r})"
