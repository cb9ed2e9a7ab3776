"""Environment defaults (MLFLOW_WEBHOOK_<FLAG>) are read for the command being run only: a
variable another command reads never stops this one, and a bad one for this command ends it
in one line, exit 2, as before."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_lifecycle import cli

BAD_PORT = {"MLFLOW_WEBHOOK_PORT": "https"}
PORT_LINE = "mlflow-webhook: error: MLFLOW_WEBHOOK_PORT='https' is not a valid value for --port"


def test_a_bad_serve_variable_leaves_certs_alone(tmp_path: Path) -> None:
    shown = cli("certs", "--help", env=BAD_PORT)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("usage: mlflow-webhook certs") and shown.stderr == ""
    made = cli("certs", "--out", str(tmp_path / "certs"), env=BAD_PORT)
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "certs" / "tls.crt").is_file()


@pytest.mark.parametrize("args", [["serve"], ["serve", "--help"]])
def test_a_bad_serve_variable_stops_serve_in_one_line(args: list[str]) -> None:
    result = cli(*args, env=BAD_PORT)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [PORT_LINE]
    assert result.stdout == ""


def test_the_chosen_commands_variables_still_apply(tmp_path: Path) -> None:
    """certs reads its own (MLFLOW_WEBHOOK_SERVICE), shown in its --help as the default."""
    env = {**BAD_PORT, "MLFLOW_WEBHOOK_SERVICE": "hook"}
    shown = cli("certs", "--help", env={**env, "COLUMNS": "400"})
    assert "(default: hook) [env MLFLOW_WEBHOOK_SERVICE]" in shown.stdout
    made = cli("certs", "--out", str(tmp_path), env=env)
    assert made.returncode == 0, made.stderr
    assert "hook.mlflow-webhook.svc" in made.stdout


def test_a_bad_variable_of_a_flag_certs_lacks_is_not_read_by_certs(tmp_path: Path) -> None:
    """--output belongs to audit, bootstrap and teardown: each of those refuses the value."""
    env = {"MLFLOW_WEBHOOK_OUTPUT": "yaml"}
    assert cli("certs", "--out", str(tmp_path), env=env).returncode == 0
    refused = cli("teardown", "--help", env=env)
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        "mlflow-webhook: error: MLFLOW_WEBHOOK_OUTPUT='yaml' must be one of table, json"
    ]
