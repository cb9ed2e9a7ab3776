"""Whether a Pod (or Pod template) asks to be injected, from its labels and annotations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from webhook.core.echo import shown
from webhook.core.settings import Settings

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"

# The words this project itself writes: "true" on a Pod, and "enabled", the namespace label's
# value under the same key, which people copy onto Pods. Case and surrounding spaces do not
# matter; anything else ("yes", "1", "on") is a warning, not a guess.
_TRUE = frozenset({"true", "enabled"})
_FALSE = frozenset({"false", "disabled"})

Verdict = Literal["opted-in", "not-opted-in", "opted-out", "mirror-pod", "invalid-opt-in"]


@dataclass(frozen=True)
class OptIn:
    verdict: Verdict
    detail: str = ""

    @property
    def inject(self) -> bool:
        return self.verdict == "opted-in"


# The verdicts that carry no detail, made once: a frozen dataclass is slow to build.
_PLAIN = {
    verdict: OptIn(verdict) for verdict in ("opted-in", "not-opted-in", "opted-out", "mirror-pod")
}


def opt_in(metadata: dict[str, Any], settings: Settings, *, default: bool = False) -> OptIn:
    """The label wins over the annotation; `default` is what an unmarked object gets."""
    annotations = mapping(metadata.get("annotations"))
    if MIRROR_ANNOTATION in annotations:
        return _PLAIN["mirror-pod"]
    key = settings.inject_key
    labels = mapping(metadata.get("labels"))
    source, value = (
        ("label", labels[key]) if key in labels else ("annotation", annotations.get(key))
    )
    if value is None:
        return _PLAIN["opted-in" if default else "not-opted-in"]
    # Kubernetes keeps labels and annotations as strings; anything else was never typed by
    # a person, so it opts nothing in.
    word = value.strip().lower() if isinstance(value, str) else None
    if word in _TRUE:
        return _PLAIN["opted-in"]
    if word in _FALSE:
        return _PLAIN["opted-out"]
    return OptIn(
        "invalid-opt-in",
        f"{source} {key}={shown(value)} is neither true nor false (nor enabled or disabled), "
        "so nothing was injected",
    )


def mapping(value: Any) -> dict[str, Any]:
    """`value` when it is an object, else an empty one: for reading input of unknown shape."""
    return value if isinstance(value, dict) else {}
