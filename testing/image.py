"""The image, run by docker the way the Deployment in `manifests/` runs it: the rendered Pod
template's security context, volumes, memory and CPU limits, environment and ConfigMaps, and
the ServiceAccount files and variables a Pod gets in a cluster.

Two things differ, because docker's host network stands in for a Pod's own: the webhook listens
on a free loopback port (`MLFLOW_WEBHOOK_HOST`/`PORT`), and `KUBERNETES_SERVICE_HOST`/`PORT`
name the API server on loopback (its certificate covers 127.0.0.1 as it does a Service's IP).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from webhook import __version__

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / ".ci" / "build-image"
# CI names the image it has just built, and then the image tests must run, never skip.
IMAGE = os.environ.get("MLFLOW_WEBHOOK_IMAGE") or f"mlflow-webhook:{__version__}"
REQUIRED = bool(os.environ.get("MLFLOW_WEBHOOK_IMAGE"))
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9}


def missing_reason() -> str | None:
    """Why the image cannot be run here, or None when it can."""
    if shutil.which("docker") is None:
        return f"no docker client (as root on Debian, {BUILD} installs one and builds the image)"
    info = docker("info", check=False)
    if info.returncode != 0:
        return f"no Docker daemon answers ({BUILD} --keep-daemon starts one and builds the image)"
    if docker("image", "inspect", IMAGE, check=False).returncode != 0:
        return f"the image {IMAGE} is not built (run {BUILD})"
    return None


def docker(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:2])} failed:\n{done.stderr}")
    return done


def quantity(value: str | int) -> float:
    """A Kubernetes resource quantity ("256Mi", "500m", "1") as a plain number."""
    text = str(value)
    if text.endswith("m"):
        return int(text[:-1]) / 1000
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMG]i?|k)?", text)
    if match is None:
        raise ValueError(f"quantity {text!r} is not understood here")
    return float(match.group(1)) * _UNITS.get(match.group(2) or "", 1)


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''} in the manifests"
    return found[0]


class Deployment:
    """The Deployment's webhook container, as docker arguments."""

    def __init__(self, docs: list[dict[str, Any]], container: str = "webhook") -> None:
        self.docs = docs
        self.deployment = find(docs, "Deployment")
        self.namespace: str = self.deployment["metadata"]["namespace"]
        self.pod: dict[str, Any] = self.deployment["spec"]["template"]["spec"]
        (self.container,) = [c for c in self.pod["containers"] if c["name"] == container]

    def environment(self) -> dict[str, str]:
        """envFrom, then env on top, as the kubelet resolves them."""
        env: dict[str, str] = {}
        for source in self.container.get("envFrom", []):
            ref = source.get("configMapRef")
            if ref is None:
                raise NotImplementedError(f"envFrom {source}: only ConfigMaps are run here")
            data = find(self.docs, "ConfigMap", ref["name"]).get("data", {})
            env.update({source.get("prefix", "") + k: str(v) for k, v in data.items()})
        fields = {
            "metadata.namespace": self.namespace,
            "metadata.name": f"{self.deployment['metadata']['name']}-0",
            "spec.serviceAccountName": self.pod.get("serviceAccountName", "default"),
        }
        for item in self.container.get("env", []):
            if "value" in item:
                env[item["name"]] = str(item["value"])
            elif "fieldRef" in item.get("valueFrom", {}):
                env[item["name"]] = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
            else:
                raise NotImplementedError(f"env {item['name']}: {item.get('valueFrom')}")
        return env

    def security(self) -> list[str]:
        """The pod's and the container's securityContext (the container's wins) as flags."""
        pod, own = self.pod.get("securityContext", {}), self.container.get("securityContext", {})
        merged = {**pod, **own}
        user, group = merged.get("runAsUser"), merged.get("runAsGroup")
        flags: list[str] = []
        if merged.get("runAsNonRoot"):
            # The kubelet refuses to start a container that would run as root.
            effective = user if user is not None else self.image_user()
            assert str(effective).split(":")[0] not in ("", "0", "root"), effective
        if user is not None:
            flags += ["--user", f"{user}:{group if group is not None else 0}"]
        for gid in [pod.get("fsGroup"), *pod.get("supplementalGroups", [])]:
            if gid is not None:
                flags += ["--group-add", str(gid)]
        if merged.get("readOnlyRootFilesystem"):
            flags.append("--read-only")
        if merged.get("allowPrivilegeEscalation") is False:
            flags += ["--security-opt", "no-new-privileges"]
        capabilities = merged.get("capabilities", {})
        flags += [f"--cap-drop={c}" for c in capabilities.get("drop", [])]
        flags += [f"--cap-add={c}" for c in capabilities.get("add", [])]
        seccomp = merged.get("seccompProfile", {}).get("type", "RuntimeDefault")
        if seccomp == "Unconfined":
            flags += ["--security-opt", "seccomp=unconfined"]
        elif seccomp != "RuntimeDefault":  # RuntimeDefault is docker's own default profile
            raise NotImplementedError(f"seccompProfile {seccomp}")
        return flags

    def image_user(self) -> str:
        return docker("image", "inspect", "--format", "{{.Config.User}}", IMAGE).stdout.strip()

    def volumes(self, leave_out: frozenset[str] = frozenset()) -> list[str]:
        """Each mounted emptyDir as a tmpfs of its size limit, world-writable like the kubelet's."""
        by_name = {v["name"]: v for v in self.pod.get("volumes", [])}
        flags: list[str] = []
        for mount in self.container.get("volumeMounts", []):
            if mount["name"] in leave_out:
                continue
            volume = by_name[mount["name"]]
            if "emptyDir" not in volume:
                raise NotImplementedError(f"volume {volume['name']}: only emptyDir is run here")
            spec = volume["emptyDir"] or {}
            options = [f"destination={mount['mountPath']}", "tmpfs-mode=1777"]
            if "sizeLimit" in spec:
                options.append(f"tmpfs-size={int(quantity(spec['sizeLimit']))}")
            flags += ["--mount", ",".join(["type=tmpfs", *options])]
        return flags

    def limits(self) -> list[str]:
        limits = self.container.get("resources", {}).get("limits", {})
        flags = []
        if "memory" in limits:
            # No swap beyond the limit: a Pod that exceeds it is killed, not slowed.
            memory = str(int(quantity(limits["memory"])))
            flags += ["--memory", memory, "--memory-swap", memory]
        if "cpu" in limits:
            flags += ["--cpus", str(quantity(limits["cpu"]))]
        return flags

    def probe(self, kind: str = "readinessProbe") -> dict[str, Any]:
        probe: dict[str, Any] = self.container[kind]["httpGet"]
        return probe

    def run_args(
        self,
        name: str,
        port: int,
        *,
        service_account: Path | None = None,
        api_server_port: int | None = None,
        env: dict[str, str] | None = None,
        leave_out: frozenset[str] = frozenset(),
    ) -> list[str]:
        """`docker run` arguments for this container on the host network, detached."""
        environment = {
            **self.environment(),
            "MLFLOW_WEBHOOK_HOST": "127.0.0.1",
            "MLFLOW_WEBHOOK_PORT": str(port),
            **(env or {}),
        }
        mounts: list[str] = []
        if service_account is not None and self.pod.get("automountServiceAccountToken", True):
            mounts = ["--volume", f"{service_account}:{SERVICE_ACCOUNT_DIR}:ro"]
            environment |= {
                "KUBERNETES_SERVICE_HOST": "127.0.0.1",
                "KUBERNETES_SERVICE_PORT": str(api_server_port),
            }
        entrypoint = self.container.get("command", [])
        grace = self.pod.get("terminationGracePeriodSeconds", 30)
        return [
            "run",
            "--detach",
            "--name",
            name,
            "--network=host",
            "--hostname",
            f"{self.deployment['metadata']['name']}-0",
            f"--stop-timeout={grace}",
            *self.security(),
            *self.volumes(leave_out),
            *self.limits(),
            *mounts,
            *[f"--env={k}={v}" for k, v in sorted(environment.items())],
            *([f"--entrypoint={entrypoint[0]}"] if entrypoint else []),
            IMAGE,
            *entrypoint[1:],
            *self.container.get("args", []),
        ]


def service_account_files(folder: Path, token: str, ca: bytes, namespace: str) -> Path:
    """What the kubelet projects into a Pod: token, ca.crt, namespace, readable by any user."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    for name, data in (
        ("token", token.encode()),
        ("ca.crt", ca),
        ("namespace", namespace.encode()),
    ):
        (folder / name).write_bytes(data)
        (folder / name).chmod(0o644)
    return folder


class Container:
    """One running container; removed by `remove`, and only that one."""

    def __init__(self, args: list[str]) -> None:
        self.id = docker(*args).stdout.strip()

    def state(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(
            docker("inspect", "--format", "{{json .State}}", self.id).stdout
        )
        return found

    def logs(self) -> str:
        done = docker("logs", self.id, check=False)
        return done.stdout + done.stderr

    def entries(self) -> list[dict[str, Any]]:
        """Its JSON log lines."""
        found = []
        for line in self.logs().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                found.append(json.loads(line))
        return found

    def wait(self, timeout: float = 60) -> int:
        return int(docker("wait", self.id, timeout=timeout).stdout.strip())

    def remove(self) -> None:
        docker("rm", "--force", self.id, check=False)


def answers(port: int, path: str, context: ssl.SSLContext | None = None) -> int | None:
    """The HTTPS status at 127.0.0.1:port, or None while nothing answers. Without a context,
    the certificate is not checked, as the kubelet's probes do not check it."""
    if context is None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(
            f"https://127.0.0.1:{port}{path}", context=context, timeout=2
        ) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return None
