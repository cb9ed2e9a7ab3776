"""The command line: each subcommand's help shows only its own flags with their defaults, and
every mistake a person can make ends in one line and exit 2, never a traceback."""

from __future__ import annotations

import re

import pytest

from tests.test_lifecycle import cli

# What each command reads; nothing else may appear in its --help.
OWN_FLAGS = {
    "iam-policy": {
        "--region",
        "--cluster-name",
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
    },
    "ui-url": {"--region", "--tracking-server-name", "--tracking-server-arn", "--expires-seconds"},
    "certs": {"--service", "--namespace", "--out"},
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


def test_iam_policy_help_has_no_plan_or_server_settings() -> None:
    flags, _ = help_flags("iam-policy")
    assert not flags & {"--dry-run", "--wait", "--output", "--tag", "--tracking-server-size"}


@pytest.mark.parametrize("command", ["serve", "bootstrap", "iam-policy", "inject", "certs"])
def test_help_shows_each_default(command: str) -> None:
    _, text = help_flags(command)
    flat = " ".join(text.split())
    for flag, default in {
        "--tracking-server-name": "mlflow-tracking",
        "--pod-role-name": "SM_MLFLOW_ACCESS_ROLE",
        "--port": "8443",
        "--dry-run": "off",
        "--service-account": "sagemaker-mlflow-sa",
        "--out": "certs",
    }.items():
        if f" {flag} " in flat:
            section = flat.split(f" {flag} ", 1)[1].split(" [env", 1)[0]
            assert f"(default: {default})" in section, (command, flag, section)


@pytest.mark.parametrize("port", ["99999", "65536", "-1"])
def test_serve_refuses_a_port_out_of_range(port: str) -> None:
    result = cli("serve", "--tracking-uri", "http://127.0.0.1:5000", "--port", port)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert f"invalid port value: '{port}'" in result.stderr
