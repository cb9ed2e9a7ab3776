"""A Patch is the operations it was given, in order, as JSON and read back."""

from __future__ import annotations

import json

import jsonpatch

from webhook.core.patches import Patch, written

ENTRIES = [
    {"name": "A", "value": "1"},
    {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "x"}}},
]


def test_operations_and_runs_of_appends_read_back_in_order() -> None:
    patch = Patch()
    patch.add("/spec/serviceAccountName", "sa")
    patch.extend("/spec/containers/0/env", [written(e) for e in ENTRIES], exists=True)
    patch.extend("/spec/containers/1/env", [written(e) for e in ENTRIES], exists=False)
    patch.add("/spec/containers/0/env/0/value", "2", op="replace")
    expected = [
        {"op": "add", "path": "/spec/serviceAccountName", "value": "sa"},
        {"op": "add", "path": "/spec/containers/0/env/-", "value": ENTRIES[0]},
        {"op": "add", "path": "/spec/containers/0/env/-", "value": ENTRIES[1]},
        {"op": "add", "path": "/spec/containers/1/env", "value": ENTRIES},
        {"op": "replace", "path": "/spec/containers/0/env/0/value", "value": "2"},
    ]
    assert json.loads(patch.json()) == expected
    assert patch == expected and list(patch) == expected and patch[1] == expected[1]
    assert len(patch) == 5


def test_it_applies_as_the_operations_do() -> None:
    pod = {"spec": {"containers": [{"name": "a", "env": [{"name": "X", "value": "y"}]}, {}]}}
    patch = Patch()
    patch.extend("/spec/containers/0/env", [written(e) for e in ENTRIES], exists=True)
    patch.extend("/spec/containers/1/env", [written(ENTRIES[0])], exists=False)
    patched = jsonpatch.apply_patch(pod, list(patch))
    assert patched["spec"]["containers"][0]["env"] == [{"name": "X", "value": "y"}, *ENTRIES]
    assert patched["spec"]["containers"][1]["env"] == [ENTRIES[0]]


def test_nothing_appended_is_no_operation() -> None:
    patch = Patch()
    patch.extend("/spec/volumes", [], exists=False)
    assert not patch and patch == [] and patch.json() == b"[]"


def test_a_path_with_characters_to_escape_is_written_as_json() -> None:
    patch = Patch()
    patch.add('/metadata/annotations/a~1"b', 'v"\\')
    assert json.loads(patch.json()) == [
        {"op": "add", "path": '/metadata/annotations/a~1"b', "value": 'v"\\'}
    ]
