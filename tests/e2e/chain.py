"""The end-to-end chain, shared by the tests and the demo: moto for IAM, STS and S3; a real
`mlflow server`; the SageMaker front-door emulator; the webhook over TLS; and a "container"
process that sees only what the webhook injected."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testing.kube import kubelet
from testing.kube.controlplane import ControlPlane
from testing.servers import WebhookProcess
from testing.support import apply, decode_patch, free_port, kubeflow_worker_pod, review_for
from tests.aws.gate import Call, IamGate
from tests.aws.moto import ACCOUNT, REGION, Moto
from tests.aws.sts import StsEmulator
from tests.e2e import venv
from tests.e2e.front import Front, Seen
from webhook.core import policies

BUCKET = "mlflow-artifacts"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/SM_MLFLOW_ACCESS_ROLE"
SERVER_ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:mlflow-tracking-server/mlflow-tracking"
# ../shared/kube's --service-account-issuer: what its tokens carry as `iss`.
ISSUER = "https://kubernetes.default.svc.cluster.local"
ARTIFACTS = "mlflow/"
TRAIN = Path(__file__).with_name("train.py")
# Every container runtime gives a process these; nothing else reaches the "container".
RUNTIME_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}


def provision(moto: Moto, issuer: str = ISSUER) -> None:
    """What the bootstrap sets up in AWS: the artifact bucket, the cluster's OIDC provider, and
    the IRSA role, trusting our ServiceAccount in team-a and allowed the pod policy."""
    moto.client("s3").create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    host = issuer.removeprefix("https://")
    iam = moto.client("iam")
    provider = iam.create_open_id_connect_provider(
        Url=issuer, ClientIDList=["sts.amazonaws.com"], ThumbprintList=["0" * 40]
    )["OpenIDConnectProviderArn"]
    trust = policies.document(
        {
            "Effect": "Allow",
            "Principal": {"Federated": provider},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {
                "StringEquals": {f"{host}:aud": "sts.amazonaws.com"},
                "StringLike": {f"{host}:sub": "system:serviceaccount:team-a:sagemaker-mlflow-sa"},
            },
        }
    )
    iam.create_role(RoleName="SM_MLFLOW_ACCESS_ROLE", AssumeRolePolicyDocument=json.dumps(trust))
    access = policies.pod_access("aws", SERVER_ARN, BUCKET, ARTIFACTS)
    iam.put_role_policy(
        RoleName="SM_MLFLOW_ACCESS_ROLE", PolicyName="pod", PolicyDocument=json.dumps(access)
    )


@dataclass
class Aws:
    """moto, with STS's web-identity check (the emulator) and S3's IAM (the gate) in front."""

    moto: Moto
    sts: StsEmulator
    gate: IamGate

    @classmethod
    def start(cls, issuer: str = ISSUER) -> Aws:
        """Until `sts.trust_keys` is given the issuer's keys, no token verifies."""
        moto = Moto()
        provision(moto, issuer)
        gate = IamGate(moto.url, ACCOUNT)
        gate.start()
        sts = StsEmulator(moto.url, ACCOUNT, gate=gate)
        sts.start()
        return cls(moto, sts, gate)

    def stop(self) -> None:
        self.gate.stop()
        self.sts.stop()
        self.moto.stop()


class MlflowServer:
    """A real `mlflow server` from the end-to-end environment.

    `sagemaker` mode stores artifacts in S3 and does not serve them, as SageMaker runs it: the
    client writes to S3 with its own credentials, or, with the plugin's presigned uploads, to
    a URL this server signs (MLflow's own POST /api/2.0/mlflow/artifacts/presigned-upload-url,
    which the front door forwards like any other call). `self-hosted` mode proxies artifacts
    itself.
    """

    def __init__(
        self,
        workdir: Path,
        moto: Moto,
        mode: str = "sagemaker",
        artifact_root: str = f"s3://{BUCKET}/mlflow",
        credentials: dict[str, str] | None = None,
    ) -> None:
        """`credentials`: the execution role's session, by default moto's own account's."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        store = ["--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}"]
        if mode == "sagemaker":
            store += ["--default-artifact-root", artifact_root, "--no-serve-artifacts"]
        else:
            store += ["--serve-artifacts", "--artifacts-destination", str(workdir / "artifacts")]
        self.log = (workdir / "mlflow-server.log").open("wb")
        self.proc = subprocess.Popen(
            [
                str(venv.ensure() / "bin" / "mlflow"),
                "server",
                *store,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={
                **RUNTIME_ENV,
                **(credentials or SERVER_S3),
                "AWS_DEFAULT_REGION": REGION,
                "MLFLOW_S3_ENDPOINT_URL": moto.url,
            },
            # Its own process group: `mlflow server` starts uvicorn, a job runner and its
            # consumers, which outlive a signal sent to it alone.
            start_new_session=True,
        )
        self._wait(workdir)

    def _wait(self, workdir: Path, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(
            "mlflow server did not start:\n" + (workdir / "mlflow-server.log").read_text()[-3000:]
        )

    def api(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path, data=data, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            return json.loads(r.read())

    def run_in(self, experiment: str) -> dict[str, Any]:
        """The one run logged in the named experiment, through MLflow's REST API."""
        found = self.api(f"/api/2.0/mlflow/experiments/get-by-name?experiment_name={experiment}")
        experiment_id = found["experiment"]["experiment_id"]
        runs = self.api("/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment_id]})["runs"]
        assert len(runs) == 1, runs
        return dict(runs[0])

    def stop(self) -> None:
        """The server and every process it started: its whole process group."""
        group = self.proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while _group_alive(group) and time.monotonic() < deadline:
            self.proc.poll()  # reaped, the server itself no longer counts as alive
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        self.proc.wait()
        self.log.close()


# What SageMaker runs the server with: its execution role's credentials, here moto's, and moto
# itself as S3, so the URLs it presigns are real and S3 (moto) takes them without the gate: S3
# authorizes a presigned request as its signer, never as the Pod that sends it.
SERVER_S3 = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def admit(
    webhook: WebhookProcess, pod: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """POST the Pod CREATE review to the webhook over TLS; return the patch and the patched Pod."""
    review = review_for(pod)
    request = urllib.request.Request(
        f"{webhook.url}/mutate?timeout=5s",
        data=json.dumps(review).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "kube-apiserver-admission"},
    )
    # Generous: on a loaded machine a TLS handshake alone has taken over 10 s.
    with urllib.request.urlopen(request, context=webhook.client_context(), timeout=60) as r:
        response = json.loads(r.read())
    patch = decode_patch(response)
    return patch, apply(pod, patch)


def container_env(pod: dict[str, Any], name: str) -> dict[str, str]:
    """The named container's variables as the kubelet resolves them (Downward API, `$(VAR)`)."""
    return kubelet.environment(pod, name)


def kubelet_token(
    plane: ControlPlane,
    pod: dict[str, Any],
    env: dict[str, str],
    root: Path,
    namespace: str = "team-a",
    **override: str,
) -> None:
    """What the kubelet does for the injected volume: a TokenRequest for the Pod's
    ServiceAccount, with the volume's audience and lifetime, written where the Pod mounts it."""
    source = token_source(pod)
    token = plane.token(
        override.get("service_account", pod["spec"]["serviceAccountName"]),
        namespace,
        audience=override.get("audience", source["audience"]),
        duration=f"{source['expirationSeconds']}s",
    )
    write_token(root, pod, env, token)


def token_source(pod: dict[str, Any]) -> dict[str, Any]:
    """The aws-iam-token volume's serviceAccountToken source, as the webhook injected it."""
    [volume] = [v for v in pod["spec"]["volumes"] if v["name"] == "aws-iam-token"]
    source: dict[str, Any] = volume["projected"]["sources"][0]["serviceAccountToken"]
    return source


def write_token(root: Path, pod: dict[str, Any], env: dict[str, str], token: str) -> Path:
    """Put `token` where the kubelet would: at the file AWS_WEB_IDENTITY_TOKEN_FILE names,
    which must lie in the volume the container mounts. `root` stands for the container's /."""
    [mount] = [
        m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["name"] == "aws-iam-token"
    ]
    named = env["AWS_WEB_IDENTITY_TOKEN_FILE"]
    assert named == f"{mount['mountPath']}/{token_source(pod)['path']}", named
    path = root / named.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(token)
    return path


def run_training(
    env: dict[str, str], workdir: Path, script: Path = TRAIN
) -> subprocess.CompletedProcess[str]:
    """The recipe's snippet in a process whose environment is exactly `env` plus the runtime's."""
    python = venv.ensure() / "bin" / "python"
    return subprocess.run(
        [str(python), str(script)],
        env={**RUNTIME_ENV, **env},
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )


def redirects(env: dict[str, str], aws: Aws, front: Front | None, root: Path) -> dict[str, str]:
    """The test-only redirects, and nothing else:

    - SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT points the real sagemaker-mlflow plugin at the front-door
      emulator instead of https://<region>.experiments.sagemaker.aws;
    - AWS_ENDPOINT_URL_STS points STS at the web-identity emulator, and MLFLOW_S3_ENDPOINT_URL
      S3 at the IAM gate, both in front of moto;
    - AWS_WEB_IDENTITY_TOKEN_FILE keeps the injected path, re-rooted under the test's folder
      (which stands for the container's /), where the token is written.
    """
    out = dict(env)
    if front is not None:
        out["SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT"] = front.url
    out["AWS_ENDPOINT_URL_STS"] = aws.sts.url
    out["MLFLOW_S3_ENDPOINT_URL"] = aws.gate.url
    if "AWS_WEB_IDENTITY_TOKEN_FILE" in out:
        out["AWS_WEB_IDENTITY_TOKEN_FILE"] = str(
            root / out["AWS_WEB_IDENTITY_TOKEN_FILE"].lstrip("/")
        )
    return out


def s3_keys(moto: Moto, artifact_uri: str) -> list[str]:
    bucket, _, prefix = artifact_uri.removeprefix("s3://").partition("/")
    listed = moto.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for o in listed.get("Contents", [])]


@dataclass
class Ran:
    """One training process in a Pod the webhook admitted, and what AWS and MLflow saw of it."""

    env: dict[str, str]
    result: subprocess.CompletedProcess[str]
    calls: list[Call]  # the IAM gate's, S3 as the pod role
    seen: list[Seen]  # the front door's


@dataclass
class Pods:
    """Pods run through the chain: admitted by a webhook, given the kubelet's token, trained."""

    aws: Aws
    plane: ControlPlane
    front: Front
    tmp_path: Path

    def train(
        self,
        webhook: WebhookProcess,
        experiment: str,
        script: Path = TRAIN,
        without: str = "",
    ) -> Ran:
        """`without`: a variable the webhook injected, taken away again."""
        _, pod = admit(webhook, kubeflow_worker_pod(experiment=experiment))
        env = container_env(pod, "pytorch")
        env.pop(without, None)
        kubelet_token(self.plane, pod, env, self.tmp_path)
        aws, front = self.aws, self.front
        calls, seen = len(aws.gate.calls), len(front.seen)
        redirected = redirects(env, aws, front, self.tmp_path)
        result = run_training(redirected, self.tmp_path, script)
        return Ran(env, result, aws.gate.calls[calls:], front.seen[seen:])
