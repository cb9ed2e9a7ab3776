"""The command line: each subcommand's help shows only its own flags with their defaults, and
every mistake a person can make ends in one line and exit 2, never a traceback."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.aws.moto import CLUSTER, Moto
from tests.aws.sagemaker import SageMakerEmulator
from tests.test_lifecycle import cli
from webhook.cli.main import build_parser

# What each command reads; nothing else may appear in its --help.
OWN_FLAGS = {
    "iam-policy": {
        "--region",
        "--cluster-name",
        "--kind",
        "--tracking-server-name",
        "--pod-role-name",
        "--pod-policy-name",
        "--server-role-name",
        "--artifact-store-uri",
        "--tracking-server-arn",
        "--credentials",
        "--account",
        "--oidc-issuer",
        "--serve",
        "--out",
        "--artifact-uploads",
        "--assume-role-arn",
        "--central-role",
    },
    "ui-url": {
        "--region",
        "--kind",
        "--tracking-server-name",
        "--tracking-server-arn",
        "--expires-seconds",
    },
    "certs": {"--service", "--namespace", "--out"},
    "audit": {
        "--kubeconfig",
        "--namespace",
        "--output",
        "--prefix",
        "--credentials",
        "--namespace-settings",
    },
    "teardown": {
        "--region",
        "--cluster-name",
        "--kind",
        "--tracking-server-name",
        "--pod-role-name",
        "--pod-policy-name",
        "--server-role-name",
        "--service-account",
        "--artifact-store-uri",
        "--dry-run",
        "--output",
        "--yes",
        "--delete-artifacts",
    },
}


def help_flags(command: str) -> tuple[set[str], str]:
    result = cli(command, "--help", env={"COLUMNS": "400"})
    assert result.returncode == 0, result.stderr
    flags = set(re.findall(r"^\s+(--[a-z-]+)", result.stdout, re.MULTILINE)) - {"--help"}
    return flags, result.stdout


@pytest.mark.parametrize("command", sorted(OWN_FLAGS))
def test_help_shows_only_the_commands_own_flags(command: str) -> None:
    flags, _ = help_flags(command)
    assert flags == OWN_FLAGS[command]


COMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_says_what_it_does_with_an_example(command: str) -> None:
    """A paragraph under the usage line, and examples at the end that the parser accepts as
    written (what a person copies must run); no empty default shown."""
    _, text = help_flags(command)
    usage, description, *_ = text.split("\n\n")
    assert usage.startswith(f"usage: mlflow-webhook {command} ")
    assert len(description.split()) >= 12 and description.endswith("."), description
    examples = text.split("\nexamples:\n", 1)[1].replace("\\\n", " ").splitlines()
    assert examples and all(e.startswith(f"  mlflow-webhook {command}") for e in examples)
    for example in examples:
        args = shlex.split(example.split(" | ")[0])[1:]
        assert build_parser().parse_args(args).command == command, example
    assert "(default: )" not in text


@pytest.mark.parametrize("command", ["teardown", "ui-url"])
def test_commands_that_make_nothing_speak_of_nothing_made(command: str) -> None:
    """teardown removes and ui-url opens: bootstrap's words (ensure, create) are not theirs."""
    _, text = help_flags(command)
    assert not re.search(r"ensure|create|needed", text, re.IGNORECASE), text


def test_serve_help_groups_its_flags() -> None:
    _, text = help_flags("serve")
    headings = re.findall(r"^(\S[^\n]*):$", text, re.MULTILINE)
    assert headings == [
        "options",
        "what Pods get",
        "the HTTPS server",
        "the cluster it works with",
        "the AWS bootstrap, run at startup when --tracking-uri is not given",
        "examples",
    ]
    server = text.split("the HTTPS server:", 1)[1].split("the cluster it works with:", 1)[0]
    assert "--port" in server and "--kubeconfig" not in server and "--region" not in server


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["serve", "--port", "x"],
            "mlflow-webhook: error: argument --port: invalid port value: 'x' "
            "(see mlflow-webhook serve --help)",
        ),
        (
            ["inject"],
            "mlflow-webhook: error: the following arguments are required: -f/--filename "
            "(see mlflow-webhook inject --help)",
        ),
        (
            ["serve", "--tracking-uri", "http://127.0.0.1:5000"],
            "mlflow-webhook: error: no cluster to work with: give --kubeconfig FILE or set "
            "$KUBECONFIG (~/.kube/config is read only when named), or --no-kube to serve "
            "admission only",
        ),
    ],
)
def test_every_error_has_one_prefix(args: list[str], line: str) -> None:
    result = cli(*args)
    assert (result.returncode, result.stderr) == (2, line + "\n")


def test_iam_policy_help_has_no_plan_or_server_settings() -> None:
    flags, _ = help_flags("iam-policy")
    assert not flags & {"--dry-run", "--wait", "--output", "--tag", "--tracking-server-size"}


@pytest.mark.parametrize("command", ["serve", "bootstrap", "iam-policy", "inject", "certs"])
def test_help_shows_each_default(command: str) -> None:
    _, text = help_flags(command)
    flat = " ".join(text.split()).split(" options: ", 1)[1]  # the flags, not the description
    for flag, default in {
        "--tracking-server-name": "mlflow-tracking",
        "--pod-role-name": "SM_MLFLOW_ACCESS_ROLE",
        "--port": "8443",
        "--dry-run": "off",
        "--service-account": "sagemaker-mlflow-sa",
        "--out": "certs",
    }.items():
        if f" {flag} " in flat and (flag != "--out" or command == "certs"):
            section = flat.split(f" {flag} ", 1)[1].split(" [env", 1)[0]
            assert f"(default: {default})" in section, (command, flag, section)


@pytest.mark.parametrize("port", ["99999", "65536", "-1"])
def test_serve_refuses_a_port_out_of_range(port: str) -> None:
    result = cli("serve", "--tracking-uri", "http://127.0.0.1:5000", "--port", port)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert f"invalid port value: '{port}'" in result.stderr


def without_aws(tmp_path: Path) -> dict[str, str]:
    """An environment with no AWS credentials anywhere the SDK looks, and no metadata service."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_EC2_METADATA_DISABLED="true",
        AWS_REGION="us-west-2",
    )
    return env


@pytest.mark.parametrize(
    "args",
    [
        ["iam-policy", "--region", "us-west-2", "--cluster-name", "ml"],
        ["bootstrap", "--cluster-name", "ml", "--trust-namespaces", "team-a", "--dry-run"],
        ["teardown", "--cluster-name", "ml", "--dry-run"],
        ["ui-url"],
        ["serve", "--no-kube", "--cluster-name", "ml", "--trust-namespaces", "team-a"],
    ],
    ids=lambda args: args[0],
)
def test_every_aws_command_without_credentials_is_one_line(args: list[str], tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "webhook", *args],
        capture_output=True,
        text=True,
        env=without_aws(tmp_path),
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        "mlflow-webhook: error: no AWS credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID, "
        "or run with a role\n"
    )


def test_a_bucket_name_s3_refuses_is_named() -> None:
    result = cli("bootstrap", "--artifact-store-uri", "s3://b/p", "--trust-namespaces", "a")
    assert result.returncode == 2
    assert result.stderr == (
        "mlflow-webhook: error: --artifact-store-uri 's3://b/p' names the bucket 'b', which is not "
        "a valid S3 bucket name: 3 to 63 lowercase letters, digits, dots and hyphens, beginning "
        "and ending with a letter or digit, not like an IP address\n"
    )


def test_iam_policy_without_an_artifact_store_grants_no_s3(
    aws: tuple[Moto, SageMakerEmulator],
) -> None:
    result = cli("iam-policy", "--cluster-name", CLUSTER)
    assert result.returncode == 0, result.stderr
    actions = {
        action
        for statement in json.loads(result.stdout)["Statement"]
        for action in (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
    }
    assert not {a for a in actions if a.startswith("s3:")}


def test_a_startup_failure_ends_serve_with_one_last_line_and_exit_2(
    aws: tuple[Moto, SageMakerEmulator], tmp_path: Path
) -> None:
    # No tracking server and no artifact store to make one with: a setup problem.
    result = cli(
        "serve",
        "--no-kube",
        "--self-signed",
        "--cert-dir",
        str(tmp_path / "certs"),
        "--port",
        "0",
        "--cluster-name",
        CLUSTER,
        "--trust-namespaces",
        "team-a",
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "mlflow-webhook: error: startup failed: tracking server mlflow-tracking does not exist: "
        "give --artifact-store-uri"
    )


OFFLINE = [
    "--account",
    "210987654321",
    "--oidc-issuer",
    "https://oidc.eks.us-west-2.amazonaws.com/id/A1",
]


def test_iam_policy_out_writes_only_a_whole_policy(tmp_path: Path) -> None:
    """Without credentials --out leaves no file behind (a shell's > leaves an empty one); the
    offline flags need none, and the file is then the policy."""
    out = tmp_path / "webhook-policy.json"
    flags = ["iam-policy", "--region", "us-west-2", "--cluster-name", "prod", "--out", str(out)]
    for extra, code in (([], 2), (OFFLINE, 0)):
        result = subprocess.run(
            [sys.executable, "-m", "webhook", *flags, *extra],
            capture_output=True,
            text=True,
            env=without_aws(tmp_path),
            timeout=60,
        )
        assert result.returncode == code, result.stderr
        assert out.exists() == (code == 0), result.stderr
    assert result.stdout == ""
    assert result.stderr == f"wrote {out}\n"
    assert json.loads(out.read_text())["Version"] == "2012-10-17"
    assert [p.name for p in tmp_path.iterdir()] == [out.name]
