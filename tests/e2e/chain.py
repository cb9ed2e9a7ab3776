"""The end-to-end chain, shared by the tests and the demo: moto for IAM, STS and S3; a real
`mlflow server`; the SageMaker front-door emulator; the webhook over TLS; and a "container"
process that sees only what the webhook injected."""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.aws.moto import ACCOUNT, REGION, Moto
from tests.e2e import venv
from tests.e2e.front import Front
from tests.servers import WebhookProcess
from tests.support import apply, decode_patch, free_port, review_for

BUCKET = "mlflow-artifacts"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/SM_MLFLOW_ACCESS_ROLE"
SERVER_ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:mlflow-tracking-server/mlflow-tracking"
APP_ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:mlflow-app/app-6xkq2hzwbm3d"
OIDC = "oidc.eks.us-west-2.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
TRAIN = Path(__file__).with_name("train.py")
# Every container runtime gives a process these; nothing else reaches the "container".
RUNTIME_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}


def provision(moto: Moto) -> None:
    """What the bootstrap sets up in AWS: the artifact bucket and the IRSA role."""
    moto.client("s3").create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/{OIDC}"},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringLike": {
                        f"{OIDC}:sub": "system:serviceaccount:*:sagemaker-mlflow-sa",
                        f"{OIDC}:aud": "sts.amazonaws.com",
                    }
                },
            }
        ],
    }
    moto.client("iam").create_role(
        RoleName="SM_MLFLOW_ACCESS_ROLE", AssumeRolePolicyDocument=json.dumps(trust)
    )


class MlflowServer:
    """A real `mlflow server` from the end-to-end environment.

    `sagemaker` mode stores artifacts in S3 and does not serve them, as SageMaker runs it: the
    client writes to S3 with its own credentials. `self-hosted` mode proxies artifacts itself.
    """

    def __init__(self, workdir: Path, moto: Moto, mode: str = "sagemaker") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        store = ["--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}"]
        if mode == "sagemaker":
            store += ["--default-artifact-root", f"s3://{BUCKET}/mlflow", "--no-serve-artifacts"]
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
            env={**RUNTIME_ENV, "MLFLOW_S3_ENDPOINT_URL": moto.url},
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
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


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
    with urllib.request.urlopen(request, context=webhook.client_context(), timeout=10) as r:
        response = json.loads(r.read())
    patch = decode_patch(response)
    return patch, apply(pod, patch)


def container_env(pod: dict[str, Any], name: str) -> dict[str, str]:
    [container] = [c for c in pod["spec"]["containers"] if c["name"] == name]
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def write_token(root: Path, pod: dict[str, Any]) -> Path:
    """Write the projected ServiceAccount token where the mutated Pod mounts it, under `root`."""
    [volume] = [v for v in pod["spec"]["volumes"] if v["name"] == "aws-iam-token"]
    source = volume["projected"]["sources"][0]["serviceAccountToken"]
    [mount] = [
        m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["name"] == "aws-iam-token"
    ]
    claims = {
        "iss": f"https://{OIDC}",
        "aud": [source["audience"]],
        "sub": f"system:serviceaccount:team-a:{pod['spec']['serviceAccountName']}",
        "exp": int(time.time()) + source["expirationSeconds"],
    }
    encode = lambda part: base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()  # noqa: E731
    path = root / mount["mountPath"].lstrip("/") / source["path"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{encode({'alg': 'RS256', 'kid': 'test'})}.{encode(claims)}.c2lnbmF0dXJl")
    return path


def run_training(env: dict[str, str], workdir: Path) -> subprocess.CompletedProcess[str]:
    """The recipe's snippet in a process whose environment is exactly `env` plus the runtime's."""
    python = venv.ensure() / "bin" / "python"
    return subprocess.run(
        [str(python), str(TRAIN)],
        env={**RUNTIME_ENV, **env},
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )


def redirects(env: dict[str, str], moto: Moto, front: Front | None, root: Path) -> dict[str, str]:
    """The test-only redirects, and nothing else:

    - SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT points the real sagemaker-mlflow plugin at the front-door
      emulator instead of https://<region>.experiments.sagemaker.aws;
    - AWS_ENDPOINT_URL_STS and MLFLOW_S3_ENDPOINT_URL point STS and S3 at moto;
    - AWS_WEB_IDENTITY_TOKEN_FILE is moved under the test's root folder, where the token the
      Pod would have mounted is written.
    """
    out = dict(env)
    if front is not None:
        out["SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT"] = front.url
    out["AWS_ENDPOINT_URL_STS"] = moto.url
    out["MLFLOW_S3_ENDPOINT_URL"] = moto.url
    if "AWS_WEB_IDENTITY_TOKEN_FILE" in out:
        out["AWS_WEB_IDENTITY_TOKEN_FILE"] = str(
            root / out["AWS_WEB_IDENTITY_TOKEN_FILE"].lstrip("/")
        )
    return out


def s3_keys(moto: Moto, artifact_uri: str) -> list[str]:
    bucket, _, prefix = artifact_uri.removeprefix("s3://").partition("/")
    listed = moto.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for o in listed.get("Contents", [])]
