"""Where a run ran: the MLflow run context, and the system-metrics node id, for one Pod.

MLflow reads both from the environment with nothing in the training image: every run that
`mlflow.start_run()` creates gets `MLFLOW_RUN_CONTEXT`'s entries as tags
(`mlflow/tracking/context/system_environment_context.py`), and the system-metrics monitor
names its metrics `system/<MLFLOW_SYSTEM_METRICS_NODE_ID>/...`, so the nodes of one run stay
apart (`mlflow/system_metrics/system_metrics_monitor.py`).

Tag keys are OpenTelemetry's semantic conventions for Kubernetes and containers, so a run reads
like the team's traces and logs; what they have no key for is under our own prefix.

What admission cannot know (the generated name, the uid, the node) comes from Downward API
variables that the kubelet resolves and then expands as `$(VAR)` in later values. Every other
`$` is written `$$`, which expansion turns back into one, so no value of ours is ever expanded.
The expanded values stay valid JSON: a Pod's name and a node's name are DNS subdomains and a
uid is a UUID, none of which holds a quote, a backslash or a control character.
"""

from __future__ import annotations

import functools
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from webhook.core.echo import clip, shown
from webhook.core.settings import Settings

POD_NAME_VAR = "MLFLOW_WEBHOOK_POD_NAME"
POD_UID_VAR = "MLFLOW_WEBHOOK_POD_UID"
NODE_NAME_VAR = "MLFLOW_WEBHOOK_NODE_NAME"
RUN_CONTEXT_VAR = "MLFLOW_RUN_CONTEXT"
NODE_ID_VAR = "MLFLOW_SYSTEM_METRICS_NODE_ID"
SYSTEM_METRICS_VAR = "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING"

# The Downward API fields behind the variables, in the order they are defined.
DOWNWARD = {
    POD_NAME_VAR: "metadata.name",
    POD_UID_VAR: "metadata.uid",
    NODE_NAME_VAR: "spec.nodeName",
}
_REF = {name: f"$({name})" for name in DOWNWARD}
_REFS = frozenset(_REF.values())
# How our own run context is recognised (`ours`): no one else writes this reference.
OURS_MARK = f'"k8s.pod.uid":"{_REF[POD_UID_VAR]}"'

# The owner kinds OpenTelemetry has keys for (`k8s.<kind>.name`, `k8s.<kind>.uid`).
_SEMCONV_OWNERS = {"Job": "job", "ReplicaSet": "replicaset", "StatefulSet": "statefulset",
                   "DaemonSet": "daemonset"}  # fmt: skip

# Pod labels the controllers our users run set on the Pods they make, kept as
# `k8s.pod.label.<key>` tags (OpenTelemetry's key for a Pod label):
# - Jobs: kubernetes/kubernetes staging/src/k8s.io/api/batch/v1/types.go,
#   JobCompletionIndexAnnotation, which pkg/controller/job/indexed_job_utils.go also sets as a
#   label (the PodIndexLabel gate: on by default since 1.28, locked on since 1.32);
# - the Kubeflow Training Operator v1: kubeflow/training-operator (release-1.9)
#   pkg/apis/kubeflow.org/v1/common_types.go, JobNameLabel, ReplicaTypeLabel (lowercased by
#   pkg/controller.v1/common/pod.go), ReplicaIndexLabel, JobRoleLabel; the MPI Operator v2
#   (kubeflow/mpi-operator pkg/apis/kubeflow/v2beta1/constants.go) uses the same keys, its
#   launcher and workers told apart by the job role;
# - JobSet, which Kubeflow Trainer v2 runs a TrainJob as (a JobSet of the TrainJob's name:
#   kubeflow/trainer pkg/runtime/framework/plugins/jobset/jobset.go):
#   kubernetes-sigs/jobset api/jobset/v1alpha2/jobset_types.go, JobSetNameKey,
#   ReplicatedJobNameKey, JobIndexKey, JobGlobalIndexKey;
# - Argo Workflows: argoproj/argo-workflows workflow/common/common.go, LabelKeyWorkflow;
# - KubeRay: ray-project/kuberay ray-operator/controllers/ray/utils/constant.go,
#   RayClusterLabelKey, RayNodeTypeLabelKey, RayNodeGroupLabelKey.
JOB_INDEX = "batch.kubernetes.io/job-completion-index"
TRAINING_JOB = "training.kubeflow.org/job-name"
REPLICA_TYPE = "training.kubeflow.org/replica-type"
REPLICA_INDEX = "training.kubeflow.org/replica-index"
JOB_ROLE = "training.kubeflow.org/job-role"
JOBSET = "jobset.sigs.k8s.io/jobset-name"
REPLICATED_JOB = "jobset.sigs.k8s.io/replicatedjob-name"
JOBSET_JOB_INDEX = "jobset.sigs.k8s.io/job-index"
JOBSET_GLOBAL_INDEX = "jobset.sigs.k8s.io/job-global-index"
ARGO_WORKFLOW = "workflows.argoproj.io/workflow"
RAY_CLUSTER = "ray.io/cluster"
RAY_NODE_TYPE = "ray.io/node-type"
RAY_GROUP = "ray.io/group"
LABELS = (JOB_INDEX, TRAINING_JOB, REPLICA_TYPE, REPLICA_INDEX, JOB_ROLE, JOBSET, REPLICATED_JOB,
          JOBSET_JOB_INDEX, JOBSET_GLOBAL_INDEX, ARGO_WORKFLOW, RAY_CLUSTER, RAY_NODE_TYPE,
          RAY_GROUP)  # fmt: skip
# Annotations kept as `k8s.pod.annotation.<key>`: the Job's index on Pods from before it was a
# label too, and Argo's step (AnnotationKeyNodeName, in the same common.go).
ANNOTATIONS = (JOB_INDEX, "workflows.argoproj.io/node-name")

# MLflow's own checks (mlflow/utils/validation.py): `validate_param_and_metric_name`,
# `path_not_unique`, MAX_ENTITY_KEY_LENGTH and MAX_TAG_VAL_LENGTH. A run whose tags fail them
# is refused, so none that would may reach a Pod.
_TAG_KEY = re.compile(r"^[/\w.\- :]*$")
_NODE_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]*\Z")
MAX_TAG_KEY = 250
MAX_TAG_VALUE = 8000
# Far below Linux's 128 KiB for one environment string (MAX_ARG_STRLEN), past which the
# container's process could not start: the run tags' share of the context.
MAX_RUN_TAGS_BYTES = 16 * 1024

_TRUE = frozenset({"true", "enabled"})
_FALSE = frozenset({"false", "disabled"})


class Template(NamedTuple):
    """The variables every container of a Pod gets from its provenance, as a key: the same
    for most Pods, so what is built from it is built once (`webhook.core.mutation`)."""

    # The Downward API variables the others refer to, in the order they are defined.
    downward: tuple[str, ...] = ()
    # Whether a run context comes between them and the values (each container its own).
    context: bool = False
    # Values by name: the node id, the system metrics switch.
    values: tuple[tuple[str, str], ...] = ()

    def env(self) -> dict[str, str | dict[str, Any]]:
        """By name, in order: Downward API variables as whole entries, then the values; the run
        context's is a placeholder until `Provenance.context` gives each container its own."""
        env: dict[str, str | dict[str, Any]] = {n: DOWNWARD_ENTRIES[n] for n in self.downward}
        if self.context:
            env[RUN_CONTEXT_VAR] = ""
        env.update(self.values)
        return env


@dataclass
class Provenance:
    """What one Pod's containers are told of where they run; values are `$`-escaped."""

    tags: dict[str, str] = field(default_factory=dict)
    node_id: str | None = None
    system_metrics: bool = False
    # (target, reason) pairs, for the mutation's notes.
    problems: list[tuple[str, str]] = field(default_factory=list)

    def context(self, container: dict[str, Any]) -> str:
        """The container's `MLFLOW_RUN_CONTEXT`: the Pod's tags and its own."""
        return self._tags_json + _container_json(container)

    def __post_init__(self) -> None:
        """Work every container shares, done once a Pod."""
        values: tuple[tuple[str, str], ...] = ()
        if self.node_id is not None:
            values = ((NODE_ID_VAR, self.node_id),)
        if self.system_metrics:
            values += ((SYSTEM_METRICS_VAR, "true"),)
        needed = tuple(DOWNWARD) if self.tags else tuple(references(self.node_id or ""))
        self.template = Template(needed, bool(self.tags), values)
        # The Pod's tags as a JSON object left open, for each container to close with its own.
        self._tags_json = orjson.dumps(self.tags).decode()[:-1] + "," if self.tags else ""


def _downward(name: str) -> dict[str, Any]:
    # apiVersion as the API server defaults it, so a reinvocation finds the entry equal.
    return {
        "name": name,
        "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": DOWNWARD[name]}},
    }


DOWNWARD_ENTRIES: dict[str, dict[str, Any]] = {name: _downward(name) for name in DOWNWARD}


def escaped(value: str) -> str:
    """`value` as the kubelet's `$(VAR)` expansion gives it back unchanged."""
    return value.replace("$", "$$")


def references(value: str) -> list[str]:
    """The Downward API variables a value of ours refers to."""
    return [name for name, ref in _REF.items() if ref in value] if "$(" in value else []


def _container_json(container: dict[str, Any]) -> str:
    """The container's own tags, as the end of a JSON object (`"k":"v",...}`)."""
    image = container.get("image")
    name = _string(container.get("name"))
    return _container_tags(name, image if isinstance(image, str) else "")


@functools.lru_cache(maxsize=1024)
def _container_tags(name: str, image: str) -> str:
    # Pure, and many containers share a name and an image: one JSON write each.
    own = {"k8s.container.name": escaped(name)}
    if image:
        own.update(image_tags(image))
    return orjson.dumps(own).decode()[1:]


def image_tags(image: str) -> dict[str, str]:
    """`container.image.*` for an image reference `name[:tag][@digest]` (escaped)."""
    name, _, digest = image.partition("@")
    if not name or not digest:
        name, digest = image, ""  # not a reference by digest: the whole of it is the name
    tag = ""
    slash, colon = name.rfind("/"), name.rfind(":")
    # A colon before the last slash is a registry's port.
    if slash < colon < len(name) - 1 and colon > 0:
        name, tag = name[:colon], name[colon + 1 :]
    out = {"container.image.name": escaped(name)}
    if tag:
        out["container.image.tags"] = escaped(tag)
    if digest:
        out["container.image.repo_digests"] = escaped(f"{name}@{digest}")
    return out


def check_tag_key(key: str) -> str:
    """Empty when MLflow takes `key` as a tag key, else why not."""
    if not key:
        return "is empty"
    if len(key) > MAX_TAG_KEY:
        return f"is longer than MLflow's {MAX_TAG_KEY} characters"
    if not _TAG_KEY.match(key):
        return (
            "holds a character MLflow refuses in a tag key (it takes letters, digits, "
            "_ - . : / and spaces)"
        )
    norm = posixpath.normpath(key)
    if norm != key or norm == "." or norm.startswith(("..", "/")):
        return "reads as a file path MLflow would change (a leading /, //, a trailing /, . or ..)"
    if key.startswith("mlflow."):
        # Our rule, not MLflow's: its own context providers set mlflow.* tags (the user, the
        # source), which a tag set on every run would hide.
        return "is in MLflow's own mlflow. namespace"
    return ""


def parse_run_tags(raw: str, source: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """`key=value,key=value` from a run-tags annotation: the good tags, and why each other one
    was left out."""
    tags: dict[str, str] = {}
    problems: list[tuple[str, str]] = []
    for item in raw.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        reason = "is not key=value" if not sep else check_tag_key(key)
        if not reason and len(value) > MAX_TAG_VALUE:
            reason = f"has a value longer than MLflow's {MAX_TAG_VALUE} characters"
        if reason:
            problems.append((source, f"run tag {shown(clip(item.strip(), 60))} {reason}; left out"))
            continue
        tags[key] = value
    return tags, problems


def switch(raw: Any, source: str, problems: list[tuple[str, str]]) -> bool | None:
    """A true/false annotation (the opt-in's words): None when absent or not one of them."""
    if raw is None:
        return None
    word = raw.strip().lower() if isinstance(raw, str) else None
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    problems.append((source, f"{shown(raw)} is neither true nor false; ignored"))
    return None


@dataclass(frozen=True)
class _Keys:
    """Our annotation and tag keys under one prefix."""

    system_metrics: str
    run_tags: str
    service_account: str
    owner: tuple[str, str, str]

    @staticmethod
    @functools.lru_cache(maxsize=8)
    def of(prefix: str) -> _Keys:
        owner = (f"{prefix}/owner-kind", f"{prefix}/owner-name", f"{prefix}/owner-uid")
        return _Keys(
            f"{prefix}/system-metrics", f"{prefix}/run-tags", f"{prefix}/service-account", owner
        )


_NOTHING = Provenance()
_LABEL_SET = frozenset(LABELS)
_ANNOTATION_SET = frozenset(ANNOTATIONS)


def provenance(
    metadata: dict[str, Any], settings: Settings, namespace: str, service_account: str
) -> Provenance:
    """For a Pod (its metadata) in `namespace`, running as `service_account`."""
    labels = metadata.get("labels") or {}
    annotations = metadata.get("annotations") or {}
    keys = _Keys.of(settings.prefix)
    raw = annotations.get(keys.system_metrics)
    if raw is None and settings.system_metrics is None and not settings.run_context:
        return _NOTHING
    problems: list[tuple[str, str]] = []
    system_metrics = False
    if raw is not None or settings.system_metrics is not None:
        key = keys.system_metrics
        pod_metrics = switch(raw, f"annotation {key}", problems)
        if pod_metrics is None:
            pod_metrics = switch(settings.system_metrics, f"namespace annotation {key}", problems)
        system_metrics = bool(pod_metrics)
    if not settings.run_context:
        return Provenance(system_metrics=system_metrics, problems=problems)
    # The Pod's name, uid and node are the kubelet's to fill in: the only values not escaped.
    ours = {
        "k8s.namespace.name": namespace,
        "k8s.pod.name": _REF[POD_NAME_VAR],
        "k8s.pod.uid": _REF[POD_UID_VAR],
        "k8s.node.name": _REF[NODE_NAME_VAR],
        keys.service_account: service_account,
    }
    if settings.cluster_name:
        ours = {"k8s.cluster.name": settings.cluster_name, **ours}
    _owner(metadata, labels, keys, ours)
    # Looked up only for what the Pod has (most have none), in one fixed order, so that the
    # context is the same string however the Pod's maps are ordered.
    if not _LABEL_SET.isdisjoint(labels):
        for key in LABELS:
            value = labels.get(key)
            if value:
                ours[f"k8s.pod.label.{key}"] = value
    if not _ANNOTATION_SET.isdisjoint(annotations):
        for key in ANNOTATIONS:
            value = annotations.get(key)
            if value and key not in labels:
                ours[f"k8s.pod.annotation.{key}"] = value[:MAX_TAG_VALUE]
    tags = {k: escaped(v) if "$" in v and v not in _REFS else v for k, v in ours.items()}
    if settings.run_tags is not None or keys.run_tags in annotations:
        _run_tags(annotations.get(keys.run_tags), settings.run_tags, keys.run_tags, tags, problems)
    return Provenance(tags, _node_id(labels, annotations), system_metrics, problems)


def _run_tags(
    pod: Any, namespace: str | None, key: str, tags: dict[str, str], problems: list[Any]
) -> None:
    """Add the run-tags annotations' tags (the Pod's win over the namespace's) to `tags`.

    Never a key of the webhook's own kinds, present on this Pod or not: provenance a Pod's
    author could write would put runs among another job's. And no more than fits
    MAX_RUN_TAGS_BYTES, so the variable stays far below what a process's environment takes.
    """
    extra: dict[str, tuple[str, str]] = {}
    reserved = ("k8s.", "container.", key.rsplit("/", 1)[0] + "/")
    for raw, source in ((namespace, f"namespace annotation {key}"), (pod, f"annotation {key}")):
        if not isinstance(raw, str):
            continue
        found, wrong = parse_run_tags(raw, source)
        problems += wrong
        for name, value in found.items():
            if name.startswith(reserved):
                reason = f"run tag {name!r} is a key of the webhook's own provenance; left out"
                problems.append((source, reason))
            else:
                extra[name] = (value, source)
    room = MAX_RUN_TAGS_BYTES
    for name, (value, source) in extra.items():
        value = escaped(value)
        room -= len(name) + len(value) + 6  # the JSON around them: "":"",
        if room < 0:
            reason = f"run tag {name!r} and those after it are past {MAX_RUN_TAGS_BYTES} bytes"
            problems.append((source, reason + " of run tags; left out"))
            return
        tags[name] = value


def _owner(
    metadata: dict[str, Any], labels: dict[str, str], keys: _Keys, into: dict[str, str]
) -> None:
    """The controlling owner: OpenTelemetry's keys for the kinds it names, ours for the rest."""
    refs = metadata.get("ownerReferences")
    for ref in refs if isinstance(refs, list) else ():
        if not isinstance(ref, dict) or ref.get("controller") is not True:
            continue
        kind, name, uid = (
            _string(ref.get("kind")),
            _string(ref.get("name")),
            _string(ref.get("uid")),
        )
        semconv = _SEMCONV_OWNERS.get(kind)
        if semconv is None:
            into.update(zip(keys.owner, (kind, name, uid), strict=True))
            return
        into[f"k8s.{semconv}.name"] = name
        into[f"k8s.{semconv}.uid"] = uid
        # A Deployment's ReplicaSet is named `<deployment>-<pod-template-hash>`, the rule the
        # OpenTelemetry collector's k8sattributes processor applies too.
        template_hash = labels.get("pod-template-hash")
        if kind == "ReplicaSet" and template_hash and name.endswith(f"-{template_hash}"):
            into["k8s.deployment.name"] = name[: -len(template_hash) - 1]
        return


def _string(value: Any) -> str:
    # The API server sends only Pods that decode, but other clients may send anything.
    return value if isinstance(value, str) else ""


def _node_id(labels: dict[str, str], annotations: dict[str, str]) -> str | None:
    """The Pod's place in a multi-Pod job, stable across its restarts where an index allows,
    else its name; None for a Pod of no such job, whose system metrics keep their plain names.

    It becomes part of metric names (`system/<id>/...`), so it is made of what label values
    hold and nothing else: letters, digits, `-`, `_` and `.`, never a `$` to escape.
    """
    index = labels.get(JOB_INDEX)
    if not _digits(index):
        index = annotations.get(JOB_INDEX)
        index = index if _digits(index) else ""
    kind, replica = labels.get(REPLICA_TYPE), labels.get(REPLICA_INDEX)
    found: str | None = None
    if labels.get(TRAINING_JOB) and (kind or labels.get(JOB_ROLE)):
        # The MPI Operator's launcher has a role and no index, as the one launcher.
        name = kind or labels[JOB_ROLE]
        found = f"{name}-{replica}" if replica else name
    elif labels.get(REPLICATED_JOB):
        parts = (labels[REPLICATED_JOB], labels.get(JOBSET_JOB_INDEX), index)
        found = "-".join(p for p in parts if p)
    elif index:
        found = f"index-{index}"
    elif labels.get(RAY_CLUSTER):
        return "head" if labels.get(RAY_NODE_TYPE) == "head" else _REF[POD_NAME_VAR]
    return found if found is None or _NODE_ID.match(found) else None


def _digits(value: Any) -> bool:
    return isinstance(value, str) and value.isascii() and value.isdigit()
