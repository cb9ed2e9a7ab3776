"""Property tests on random Pods: the patch applies, a second run is empty, nothing raises."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from testing.support import STATUS_KEY, apply, decode_patch, review_for, settings
from tests.test_mutation_fixtures import shared_mount_paths
from webhook.core.decisions import admit
from webhook.core.reviews import parse
from webhook.core.settings import TOKEN_DIR, TOKEN_VOLUME

OURS = [
    "MLFLOW_TRACKING_URI",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "MLFLOW_EXPERIMENT_NAME",
]
KEY = "mlflow-webhook.io"

names = st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True)
env_names = st.one_of(st.sampled_from(OURS), st.from_regex(r"[A-Z_]{1,8}", fullmatch=True))
env_var = st.builds(
    lambda name, value, from_field: (
        {"name": name, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
        if from_field
        else {"name": name, "value": value}
    ),
    env_names,
    st.text(max_size=12),
    st.booleans(),
)
mount = st.one_of(
    st.builds(lambda n: {"name": n, "mountPath": f"/mnt/{n}"}, names),
    st.just({"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True}),
    # Another volume where the token goes: the mount must not be doubled there.
    st.builds(lambda n: {"name": n, "mountPath": TOKEN_DIR}, names),
)


@st.composite
def containers(draw: Any, min_size: int) -> list[dict[str, Any]]:
    result = []
    for name in draw(st.lists(names, min_size=min_size, max_size=4, unique=True)):
        container: dict[str, Any] = {"name": name, "image": "python:3.12"}
        if draw(st.booleans()):
            container["env"] = draw(st.lists(env_var, max_size=6, unique_by=lambda e: e["name"]))
        if draw(st.booleans()):
            container["volumeMounts"] = draw(
                st.lists(mount, max_size=3, unique_by=lambda m: m["mountPath"])
            )
        if draw(st.booleans()):
            container["restartPolicy"] = "Always"
        result.append(container)
    return result


opt_values = st.sampled_from(["true", "false", "True", "yes", "maybe", ""])
meta_map = st.dictionaries(
    st.sampled_from(
        [
            f"{KEY}/inject",
            f"{KEY}/experiment",
            f"{KEY}/containers",
            f"{KEY}/status",
            f"{KEY}/run-tags",
            f"{KEY}/system-metrics",
            "batch.kubernetes.io/job-completion-index",
            "app",
        ]
    ),
    st.one_of(
        opt_values,
        names,
        st.just("main,sidecar"),
        st.just('{"injected":["x"],"skipped":[{}]}'),
        st.just("[1]"),
        st.just("team=a,bad key=$(X),k8s.pod.name=x"),
    ),
    max_size=4,
)


@st.composite
def pods(draw: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    if draw(st.booleans()):
        metadata["name"] = draw(names)
    else:
        metadata["generateName"] = draw(names) + "-"
    for field in ("labels", "annotations"):
        value = draw(st.one_of(st.none(), meta_map))
        if value is not None:
            metadata[field] = value
    spec: dict[str, Any] = {"containers": draw(containers(1))}
    if draw(st.booleans()):
        spec["initContainers"] = draw(containers(0))
    if draw(st.booleans()):
        spec["ephemeralContainers"] = [{"name": "debug", "image": "busybox"}]
    sa = draw(st.sampled_from([None, "", "default", "sagemaker-mlflow-sa", "other"]))
    if sa is not None:
        spec["serviceAccountName"] = sa
        if draw(st.booleans()):
            spec["serviceAccount"] = sa
    if draw(st.booleans()):
        spec["volumes"] = draw(
            st.lists(
                st.one_of(
                    st.builds(lambda n: {"name": n, "emptyDir": {}}, names),
                    st.just({"name": TOKEN_VOLUME, "projected": {"sources": []}}),
                ),
                max_size=3,
                unique_by=lambda v: v["name"],
            )
        )
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


SETTINGS = [
    settings(run_context=True),
    settings(credentials="none", role_arn=None, tracking_uri="https://mlflow.example.com"),
    settings(credentials="pod-identity", role_arn=None, service_account_policy="override"),
]


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pod=pods(), which=st.integers(0, len(SETTINGS) - 1))
def test_patch_applies_and_second_run_is_empty(pod: dict[str, Any], which: int) -> None:
    s = SETTINGS[which]
    first = admit(parse(review_for(pod)), s)
    assert first.outcome != "error", first.error
    mutated = apply(pod, first.patch)
    second = admit(parse(review_for(mutated)), s)
    assert second.outcome != "error", second.error
    assert second.patch == []
    assert shared_mount_paths(mutated) == shared_mount_paths(pod)
    if first.outcome == "injected":
        for group in ("containers", "initContainers"):
            for container in mutated["spec"].get(group) or ():
                names_set = {e["name"] for e in container.get("env") or ()}
                wanted = (pod["metadata"].get("annotations") or {}).get(f"{KEY}/containers")
                targets = {n.strip() for n in (wanted or "").split(",") if n.strip()}
                if not targets or container["name"] in targets:
                    assert "MLFLOW_TRACKING_URI" in names_set


@hsettings(max_examples=200, deadline=None)
@given(
    body=st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5)),
        lambda children: st.one_of(
            st.lists(children, max_size=3),
            st.dictionaries(st.text(max_size=8), children, max_size=4),
        ),
        max_leaves=20,
    )
)
def test_odd_objects_never_raise(body: Any) -> None:
    """Whatever sits in `object`, the answer allows the request and is well formed."""
    pod = {"metadata": {"annotations": {f"{KEY}/inject": "true"}}, "spec": body}
    review = review_for(pod)
    result = admit(parse(review), SETTINGS[0])
    response = result.response["response"]
    assert response["allowed"] is True
    assert response["uid"] == review["request"]["uid"]
    patch = decode_patch(result.response)
    assert patch == result.patch
    # A crash in the core allows too, with a warning: it must not pass for an odd object.
    assert result.outcome != "error", result.error
    if result.outcome != "injected":
        # Admitted unchanged, and told why: the Pod could not be read.
        assert patch == []
        assert (result.outcome, result.reason) == ("skipped", "malformed")
        assert "admitted unchanged" in result.warnings[-1]
        return
    # Otherwise the answer is a real one: it applies, is marked, and is stable.
    mutated = apply(pod, patch)
    assert STATUS_KEY in mutated["metadata"]["annotations"]
    assert admit(parse(review_for(mutated)), SETTINGS[0]).patch == []
