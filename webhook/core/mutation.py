"""Targeted JSON Patch operations that give one opted-in Pod its MLflow wiring.

The Pod is only read, never copied: every operation is built from what is missing,
so fields this code does not know survive, and running it on its own output yields
no operations at all.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import repeat
from types import MappingProxyType
from typing import Any, NamedTuple

import orjson

from webhook.core.echo import clip, shown
from webhook.core.irsa import SKIP_CONTAINERS, Irsa
from webhook.core.irsa import read as read_irsa
from webhook.core.optin import mapping
from webhook.core.patches import Patch, written
from webhook.core.provenance import (
    DOWNWARD,
    OURS_MARK,
    RUN_CONTEXT_VAR,
    Provenance,
    Template,
    escaped,
    provenance,
    references,
)
from webhook.core.settings import (
    ASSUME_ROLE_VAR,
    PRESIGNED_UPLOAD_VAR,
    TOKEN_AUDIENCE,
    TOKEN_DIR,
    TOKEN_EXPIRATION_SECONDS,
    TOKEN_FILE,
    TOKEN_VOLUME,
    Settings,
)

DEFAULT_SERVICE_ACCOUNTS = ("", "default")
IDENTITY_FILE_VAR = "AWS_WEB_IDENTITY_TOKEN_FILE"
# Either one set by a container means the pod-identity webhook adds neither (addEnvToContainer).
_IDENTITY = ("AWS_ROLE_ARN", IDENTITY_FILE_VAR)
# Tuples, not `str | None`: a union is built anew each time the expression runs.
_STRING_OR_NULL = (str, type(None))
_LIST_OR_NULL = (list, type(None))


# The code of the note a Pod gets when it keeps its own ServiceAccount because ours is missing:
# what the missed-Pod watch looks for (webhook/core/missed.py).
ACCOUNT_MISSING = "service-account-missing"
# Annotation values read and left out: the run context's, or IRSA's.
ANNOTATION_INVALID = "annotation-invalid"


@dataclass(frozen=True)
class Note:
    """Something left alone, and why; kept in the status annotation.

    `code` is for programs to compare (a few fixed words, `ACCOUNT_MISSING` for one); `reason`
    is for people, and its wording may change.
    """

    target: str
    reason: str
    code: str

    def as_dict(self) -> dict[str, str]:
        return {"target": self.target, "code": self.code, "reason": self.reason}

    def same(self, note: dict[str, Any]) -> bool:
        """Whether a status's note says this one, written with its code or before codes were."""
        return note.get("target") == self.target and note.get("reason") == self.reason

    def warning(self) -> str:
        # Targets hold names from the Pod, which the API server has not validated yet.
        return f"mlflow-webhook: {clip(self.target)}: {self.reason}"


@dataclass
class Mutation:
    patch: Patch = field(default_factory=Patch)
    service_account: str = ""
    injected: list[str] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    # Notes the Pod's status annotation did not hold yet: what a person should be shown now.
    new_notes: list[Note] = field(default_factory=list)


def wanted_env(settings: Settings, experiment: str | None) -> dict[str, str]:
    """The variables every injected container gets, by name, in the order they are added.

    Values are as the kubelet's `$(VAR)` expansion gives them back (`escaped`): an experiment
    named `cost$(HOME)` stays that.
    """
    env = {"MLFLOW_TRACKING_URI": escaped(settings.tracking.uri)}
    if settings.tracking.region:
        env["AWS_REGION"] = settings.tracking.region
        env["AWS_DEFAULT_REGION"] = settings.tracking.region
    if settings.credentials == "irsa" and settings.role_arn:
        env["AWS_ROLE_ARN"] = settings.role_arn
        env[IDENTITY_FILE_VAR] = TOKEN_FILE
    if settings.artifact_uploads == "presigned":
        env[PRESIGNED_UPLOAD_VAR] = "true"
    if settings.assume_role_arn:
        env[ASSUME_ROLE_VAR] = settings.assume_role_arn
    if experiment:
        env["MLFLOW_EXPERIMENT_NAME"] = escaped(experiment)
    return env


def token_volume(expiration: int = TOKEN_EXPIRATION_SECONDS) -> dict[str, Any]:
    source = {
        "audience": TOKEN_AUDIENCE,
        "expirationSeconds": expiration,
        "path": "token",
    }
    return {"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": source}]}}


@functools.lru_cache(maxsize=64)
def _volume(expiration: int) -> str:
    return written(token_volume(expiration))


def unreadable(pod: dict[str, Any]) -> str:
    """Empty when `mutate` can read this Pod, else the first thing it cannot.

    The API server sends only objects that decode into its Pod type, so this guards against
    other clients. Only what `mutate` reads is checked. Such a Pod is admitted unchanged: a
    patch built on a guess about its shape might not apply (`env: false` takes no `env/-`).
    """
    metadata = pod.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            return "metadata is not an object"
        for key in ("labels", "annotations"):
            found = metadata.get(key)
            if found is not None and not (isinstance(found, dict) and _all(found.values(), str)):
                return f"metadata.{key} is not an object of strings"
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return "spec is not an object"
    if not isinstance(spec.get("serviceAccountName", ""), _STRING_OR_NULL):
        return "spec.serviceAccountName is not a string"
    if not _list_of(spec.get("volumes"), dict):
        return "spec.volumes is not a list of objects"
    for list_name in ("initContainers", "containers"):
        containers = spec.get(list_name)
        if not _list_of(containers, dict):
            return f"spec.{list_name} is not a list of objects"
        for index, container in enumerate(containers or ()):
            if not isinstance(container.get("name"), str):
                return f"spec.{list_name}[{index}].name is not a string"
            # Their entries are checked where they are read (`_container_env`, `_mounts`), in
            # the same pass: a wide Pod's lists are long, and each pass over them costs.
            for key in ("env", "volumeMounts"):
                if not isinstance(container.get(key), _LIST_OR_NULL):
                    return f"spec.{list_name}[{index}].{key} is not a list of objects"
    return ""


class Unreadable(ValueError):
    """Met by `mutate` in a part of the Pod that `unreadable` leaves to it."""


def _string(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _list_of(value: Any, kind: type) -> bool:
    """Absent, or a list of `kind`."""
    return value is None or (isinstance(value, list) and _all(value, kind))


def _all(values: Iterable[Any], kind: type) -> bool:
    # map() keeps the loop in C: the wide Pods' lists are read on every request.
    return all(map(isinstance, values, repeat(kind)))


def mutate(
    pod: dict[str, Any], settings: Settings, account_exists: bool = True, namespace: str = ""
) -> Mutation:
    """Build the patch for an opted-in Pod or Pod template (anything with metadata and spec).

    `account_exists` False: the namespace has no ServiceAccount of ours yet, and the API server
    rejects a Pod naming a missing one; the Pod keeps its own and gets everything else.
    `namespace`: the request's, which a Pod's run context names.
    """
    metadata = pod.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    spec = pod.get("spec") or {}
    out = Mutation()
    _service_account(spec, settings, account_exists, out)
    # The Pod's own experiment wins over its namespace's default.
    experiment = annotations.get(settings.experiment_key) or settings.experiment
    env = wanted_env(settings, experiment)
    irsa = read_irsa(metadata, spec) if settings.credentials == "irsa" else None
    wanted = _wanted_containers(annotations.get(settings.containers_key), spec, out)
    token_name = _token_name(spec) if irsa else ""
    namespace = namespace or _string(metadata.get("namespace"))
    where = provenance(metadata, settings, namespace, out.service_account)
    out.notes += [Note(target, reason, ANNOTATION_INVALID) for target, reason in where.problems]
    if irsa is not None:
        out.notes += [Note(target, reason, ANNOTATION_INVALID) for target, reason in irsa.problems]
    every = _Wanted(env, where)
    mounted = False
    for list_name in ("initContainers", "containers"):
        for index, container in enumerate(spec.get(list_name) or ()):
            name = container.get("name", "")
            if wanted is not None and name not in wanted:
                continue
            own, entries = every.of(container)
            path = f"/spec/{list_name}/{index}"
            names = _env_names(container, path, every.shape.names)
            if irsa is not None and _credentials(container, path, names, irsa, own, out):
                # Only IRSA reads the mounts: where the token is, and whether ours is needed.
                token, has_mount = _mounts(container, path, token_name, out)
                if IDENTITY_FILE_VAR in own and (token != TOKEN_FILE or irsa.windows):
                    own[IDENTITY_FILE_VAR] = escaped(irsa.token_file(token))
                if not has_mount:
                    exists = container.get("volumeMounts") is not None
                    out.patch.extend(f"{path}/volumeMounts", [_MOUNT], exists)
                    mounted = True
            # Entries made once serve only where IRSA changed nothing for this container.
            same = len(own) == len(entries) and own.get(IDENTITY_FILE_VAR) == env.get(
                IDENTITY_FILE_VAR
            )
            _container_env(container, path, own, names, out, entries if same else None)
            out.injected.append(name)
    if mounted and not any(v.get("name") == TOKEN_VOLUME for v in spec.get("volumes") or ()):
        expiration = irsa.expiration if irsa is not None else TOKEN_EXPIRATION_SECONDS
        out.patch.extend("/spec/volumes", [_volume(expiration)], spec.get("volumes") is not None)
    _status(pod, settings, out)
    return out


class _Shape(NamedTuple):
    """What every injected container gets: by name, to compare with what a container sets, and
    as written env entries for one that sets none of them (most). Shared by the Pods of one
    shape, so read-only."""

    env: Mapping[str, str | dict[str, Any]]
    entries: tuple[str, ...]
    # The names whose presence in a container changes what it gets.
    names: frozenset[str]
    # Where the run context is among them (each container's own), or -1.
    at: int


@functools.lru_cache(maxsize=256)
def _shape(values: tuple[tuple[str, str], ...], template: Template) -> _Shape:
    # Pure, and the same for most Pods under the same settings: built once, never changed.
    env = {**dict(values), **template.env()}
    at = list(env).index(RUN_CONTEXT_VAR) if RUN_CONTEXT_VAR in env else -1
    names = frozenset(env).union(_IDENTITY)
    return _Shape(MappingProxyType(env), tuple(_written(env)), names, at)


class _Wanted:
    """A Pod's `_Shape`, with each container's own run context."""

    def __init__(self, env: dict[str, str], where: Provenance) -> None:
        self.where = where
        self.shape = _shape(tuple(env.items()), where.template)

    def of(self, container: dict[str, Any]) -> tuple[dict[str, str | dict[str, Any]], list[str]]:
        """The container's own copies, which IRSA's reading may change."""
        env, entries, at = dict(self.shape.env), list(self.shape.entries), self.shape.at
        if at >= 0:
            context = self.where.context(container)
            env[RUN_CONTEXT_VAR] = context
            entries[at] = written({"name": RUN_CONTEXT_VAR, "value": context})
        return env, entries


def _written(env: Mapping[str, str | dict[str, Any]]) -> list[str]:
    """Env entries as JSON text: a str is a value, a dict a whole entry."""
    return [written({"name": k, "value": v} if isinstance(v, str) else v) for k, v in env.items()]


# The token's mount, as every container that needs it gets it.
_MOUNT = written({"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True})


def _credentials(
    container: dict[str, Any],
    path: str,
    names: set[Any],
    irsa: Irsa,
    own: dict[str, str | dict[str, Any]],
    out: Mutation,
) -> bool:
    """Whether this container gets the token's mount, as the pod-identity webhook decides it;
    `own` keeps the role and the token file only where it would add them."""
    if container.get("name", "") in irsa.skipped:
        code, reason = "credentials-skipped", f"no AWS credentials: {SKIP_CONTAINERS} names it"
    elif names.isdisjoint(_IDENTITY):
        return True
    else:
        # Either one set means the container's credentials are its own: neither is added.
        # Its mount still comes, as that webhook adds it: a token file it names may be there.
        has = [k for k in _IDENTITY if k in names]
        role: dict[str, Any] = next(
            (e for e in container.get("env") or () if e.get("name") == _IDENTITY[0]), {}
        )
        code = reason = ""
        if len(has) == 1:
            other = _IDENTITY[1 - _IDENTITY.index(has[0])]
            code = "credentials-partial"
            reason = f"sets {has[0]} but not {other}: added neither, as the EKS webhook does"
        elif role.get("value") != own[_IDENTITY[0]] or "valueFrom" in role:
            code, reason = "credentials-kept", f"kept its own {_IDENTITY[0]}"
        elif irsa.windows and _value(container, _IDENTITY[1]).startswith("/"):
            # Another webhook's, which read no spec.os.name: on Windows no token is there.
            code = "token-file-linux-path"
            reason = f"kept its {_IDENTITY[1]}, a Linux path, though the Pod runs on Windows"
    for key in _IDENTITY:
        own.pop(key, None)
    if reason:
        out.notes.append(Note(_target(path, container), reason, code))
    return container.get("name", "") not in irsa.skipped


def _value(container: dict[str, Any], name: str) -> str:
    """The literal value the container gives `name` ("" for none, or one from elsewhere)."""
    for entry in container.get("env") or ():
        if entry.get("name") == name:
            value = entry.get("value")
            return value if isinstance(value, str) else ""
    return ""


def wants_account(pod: dict[str, Any], settings: Settings) -> bool:
    """Whether this opted-in Pod would be given our ServiceAccount: whether it matters that the
    account exists. A Pod that names it already, or keeps its own by policy, does not care."""
    current = mapping(pod.get("spec")).get("serviceAccountName") or ""
    return current != settings.service_account and (
        current in DEFAULT_SERVICE_ACCOUNTS or settings.service_account_policy != "keep"
    )


def _service_account(
    spec: dict[str, Any], settings: Settings, account_exists: bool, out: Mutation
) -> None:
    current = spec.get("serviceAccountName") or ""
    target = out.service_account = settings.service_account
    if current == target:
        return
    if current not in DEFAULT_SERVICE_ACCOUNTS and settings.service_account_policy == "keep":
        out.notes.append(
            Note(
                "serviceAccount",
                f"kept the Pod's ServiceAccount {current!r} instead of {target!r}; "
                "it needs the IAM access that MLflow tracking requires",
                "own-service-account-kept",
            )
        )
        out.service_account = current
        return
    if not account_exists:
        out.service_account = current or "default"
        out.notes.append(
            Note(
                "serviceAccount",
                f"ServiceAccount {target!r} does not exist in this namespace yet, so the Pod keeps "
                f"{out.service_account!r}; recreate the Pod once it exists for AWS credentials",
                ACCOUNT_MISSING,
            )
        )
        return
    if current not in DEFAULT_SERVICE_ACCOUNTS:
        out.notes.append(
            Note(
                "serviceAccount", f"replaced ServiceAccount {current!r}", "service-account-replaced"
            )
        )
    out.patch.add("/spec/serviceAccountName", target)
    # The deprecated alias must agree, or the API server's validation rejects the Pod.
    if "serviceAccount" in spec and spec["serviceAccount"] != target:
        out.patch.add("/spec/serviceAccount", target)


def _wanted_containers(
    raw: str | None, spec: dict[str, Any], out: Mutation
) -> frozenset[str] | None:
    if raw is None:
        return None
    names = frozenset(n.strip() for n in str(raw).split(",") if n.strip())
    if not names:
        return None
    present = {
        c.get("name")
        for list_name in ("initContainers", "containers")
        for c in spec.get(list_name) or ()
    }
    for missing in sorted(names - present):
        out.notes.append(
            Note(
                f"container/{missing}",
                "named in the containers annotation but not in the Pod",
                "container-not-found",
            )
        )
    return names


def _target(path: str, container: dict[str, Any]) -> str:
    """How notes name a container: `container/main`, from its pointer `/spec/containers/0`."""
    kind = "initContainer" if path.startswith("/spec/initContainers/") else "container"
    return f"{kind}/{container.get('name', '')}"


def _field(path: str, key: str) -> str:
    """`spec.containers[0].env` for (`/spec/containers/0`, `env`): how `unreadable` says it."""
    _, spec, list_name, index = path.split("/")
    return f"{spec}.{list_name}[{index}].{key}"


def _env_names(container: dict[str, Any], path: str, ours: frozenset[str]) -> set[Any]:
    """The names of `ours` that the container's env sets.

    One pass in C reads every name, checks every entry is an object and looks the name up in
    ours, with no set of all of them built: most containers set none of ours, and a wide Pod
    has hundreds. Entries are looked up one by one only for the few names we share.
    """
    env = container.get("env") or ()
    try:
        if ours.isdisjoint(map(dict.get, env, repeat("name"))):
            return set()
        return set(ours.intersection(map(dict.get, env, repeat("name"))))
    except TypeError:
        return _all_env_names(env, path)  # to say what is wrong


def _all_env_names(env: Any, path: str) -> set[Any]:
    try:
        return set(map(dict.get, env, repeat("name")))
    except TypeError:
        if not _all(env, dict):
            raise Unreadable(f"{_field(path, 'env')} is not a list of objects") from None
        raise Unreadable(f"{path}/env has an entry whose name is not a string") from None


def _container_env(
    container: dict[str, Any],
    path: str,
    env: dict[str, str | dict[str, Any]],
    names: set[Any],
    out: Mutation,
    entries: list[str] | None = None,
) -> None:
    """Add what `env` holds and the container lacks: a str is a value, a dict a whole entry.
    `entries`: `env` as written entries already, when the container sets none of it."""
    if names.isdisjoint(env):
        missing = entries if entries is not None else _written(env)
    else:
        missing = [written(e) for e in _missing(container, path, env, names, out)]
    out.patch.extend(f"{path}/env", missing, container.get("env") is not None)


def _missing(
    container: dict[str, Any],
    path: str,
    env: dict[str, str | dict[str, Any]],
    names: set[Any],
    out: Mutation,
) -> list[Any]:
    """`_container_env` where the container already sets some of the names."""
    current = container.get("env") or ()
    taken = [
        n
        for n in DOWNWARD
        if n in names and n in env and next(e for e in current if e.get("name") == n) != env[n]
    ]
    if taken:
        # Its own value would be expanded into our context, which could then name another
        # namespace, or not be JSON at all: it gets no value that refers to one.
        env = {
            k: v
            for k, v in env.items()
            if isinstance(v, dict) or set(taken).isdisjoint(references(v))
        }
        reason = f"defines {' and '.join(taken)} itself, so it gets no run context of ours"
        out.notes.append(Note(_target(path, container), reason, "run-context-skipped"))
    missing: list[Any] = []
    differ: list[str] = []
    for name, value in env.items():
        if name not in names:
            missing.append({"name": name, "value": value} if isinstance(value, str) else value)
            continue
        index, have = next((i, e) for i, e in enumerate(current) if e.get("name") == name)
        if isinstance(value, dict):
            if have != value:
                differ.append(name)
        elif have.get("value") == value and "valueFrom" not in have:
            continue
        elif name == RUN_CONTEXT_VAR and _ours(have, names):
            # Ours, from a call before another webhook changed the Pod (its image, say):
            # the Pod as it is now is what the run ran as.
            out.patch.add(f"{path}/env/{index}/value", value, op="replace")
        else:
            differ.append(name)
    # A Downward API variable is added, or its own definition worth a note, only where a
    # value added here refers to it (not where the container keeps its own run context).
    used = {n for e in missing if isinstance(e.get("value"), str) for n in references(e["value"])}
    for name in differ:
        if name not in DOWNWARD or name in used:
            out.notes.append(
                Note(_target(path, container), f"kept its own {name}", "variable-kept")
            )
    return [e for e in missing if e["name"] not in DOWNWARD or e["name"] in used]


def _ours(have: dict[str, Any], names: set[Any]) -> bool:
    """A run context this webhook wrote, whose Downward API variables come before it."""
    value = have.get("value")
    return (
        "valueFrom" not in have
        and isinstance(value, str)
        and OURS_MARK in value
        and all(name in names for name in references(value))
    )


def _mounts(container: dict[str, Any], path: str, name: str, out: Mutation) -> tuple[str, bool]:
    """Where this container finds the web identity token, `name` in the token volume, and
    whether it needs no mount of ours: one pass over its mounts.

    The token is at our mount, or where the container mounts that volume itself (the Pod's
    own, or the EKS webhook's). A container that mounts the volume, or anything at our folder,
    gets no mount from us.
    """
    token = other = None
    mounted = False
    try:
        for mount in container.get("volumeMounts") or ():
            where, volume = mount.get("mountPath"), mount.get("name")
            if where == TOKEN_DIR or volume == TOKEN_VOLUME:
                mounted = True
            if token is not None or not isinstance(where, str):
                continue
            if volume == TOKEN_VOLUME:
                # With a subPath, the mount is the token file itself.
                token = where if mount.get("subPath") else f"{where.rstrip('/')}/{name}"
            elif where.rstrip("/") == TOKEN_DIR:
                other = volume
    except AttributeError:
        raise Unreadable(f"{_field(path, 'volumeMounts')} is not a list of objects") from None
    if token is not None:
        return token, mounted
    if other is not None:
        reason = (
            f"{TOKEN_DIR} holds its volume {shown(other)}, not the web identity token, so "
            f"{IDENTITY_FILE_VAR} names a file of that volume"
        )
        out.notes.append(Note(_target(path, container), reason, "token-directory-taken"))
    return f"{TOKEN_DIR}/{name}", mounted


def _token_name(spec: dict[str, Any]) -> str:
    """The token's file name in the Pod's token volume, when it has one; ours says `token`."""
    for volume in spec.get("volumes") or ():
        if volume.get("name") == TOKEN_VOLUME:
            for source in mapping(volume.get("projected")).get("sources") or ():
                token = mapping(mapping(source).get("serviceAccountToken")).get("path")
                if isinstance(token, str) and token:
                    return token
    return "token"


def _status(pod: dict[str, Any], settings: Settings, out: Mutation) -> None:
    """Merge into any status already there, so a reinvocation adds and never forgets."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    key = settings.status_key
    raw = annotations.get(key)
    out.new_notes = list(dict.fromkeys(out.notes))
    injected, old_notes = out.injected, []
    if raw:
        try:
            loaded = orjson.loads(raw)
        except orjson.JSONDecodeError:
            loaded = None
        previous = loaded if isinstance(loaded, dict) else {}
        injected = [n for n in previous.get("injected") or () if isinstance(n, str)]
        injected += [n for n in out.injected if n not in injected]
        old_notes = [n for n in previous.get("skipped") or () if isinstance(n, dict)]
        out.new_notes = [n for n in out.new_notes if not any(map(n.same, old_notes))]
    status = {
        "injected": injected,
        "serviceAccount": out.service_account,
        "trackingUri": settings.tracking.uri,
        "credentials": settings.credentials,
        "skipped": old_notes + [n.as_dict() for n in out.new_notes],
    }
    if settings.source != "global":
        # Absent means global, so the status of a Pod injected before namespace settings
        # existed reads the same and is not rewritten.
        status["settings"] = settings.source
    value = orjson.dumps(status).decode()
    if value == raw:
        return
    if "metadata" not in pod or pod["metadata"] is None:
        out.patch.add("/metadata", {"annotations": {key: value}})
    elif pod["metadata"].get("annotations") is None:
        out.patch.add("/metadata/annotations", {key: value})
    else:
        out.patch.add(settings.status_pointer, value)
