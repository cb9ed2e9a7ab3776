"""What the control-plane tests of `webhook/kube` cannot reach, found by its sampled mutation run
(docs/mutation-testing.md): a list longer than one page. The test clusters never hold more than
`PAGE_SIZE` objects of a kind, so the API server always answers in one page there."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson

from webhook.kube import watches


def test_a_list_of_more_than_one_page_is_read_to_its_end() -> None:
    calls: list[dict[str, Any]] = []

    def lister(**params: Any) -> SimpleNamespace:
        calls.append(params)
        if not params.get("_continue"):
            body = {"metadata": {"continue": "page-2"}, "items": [{"n": 1}]}
        else:
            body = {"metadata": {"resourceVersion": "7"}, "items": [{"n": 2}]}
        return SimpleNamespace(data=orjson.dumps(body))

    got = list(watches.pages(lister, label_selector="a=b"))

    assert [page["items"] for page in got] == [[{"n": 1}], [{"n": 2}]]
    assert [call.get("_continue") or None for call in calls] == [None, "page-2"]
    assert {call["limit"] for call in calls} == {watches.PAGE_SIZE}
    assert {call["label_selector"] for call in calls} == {"a=b"}
