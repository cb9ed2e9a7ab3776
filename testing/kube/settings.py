"""`manifests/` as a user would have it: a copy with settings.env made from the example, the way
docs/install.md says (copy, then replace each REPLACE-ME; for the irsa overlay, part B instead of
A). An unedited checkout does not render, by design, so the tests render such a copy.

Every copy is git's view of `manifests/` (the index: what a developer has staged), never the
working tree, which a person following docs/install.md edits (settings.env, the image's name in
kustomization.yaml) in the same checkout. Outside a git checkout (an unpacked sdist) the files
on disk are all there is, settings.env left out."""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any

import yaml

from testing.support import ROLE_ARN, TRACKING_ARN

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "manifests" / "base" / "settings.env.example"
PLACEHOLDER = "REPLACE-ME"
# Part A: what `mlflow-webhook bootstrap` printed.
GIVEN = {"MLFLOW_WEBHOOK_TRACKING_URI": TRACKING_ARN, "MLFLOW_WEBHOOK_ROLE_ARN": ROLE_ARN}
# Part B: the irsa overlay, where the webhook bootstraps itself.
BOOTSTRAP = {
    "WEBHOOK_IAM_ROLE_ARN": "arn:aws:iam::210987654321:role/mlflow-webhook-bootstrap",
    "MLFLOW_WEBHOOK_REGION": "us-west-2",
    "MLFLOW_WEBHOOK_CLUSTER_NAME": "ml",
    "MLFLOW_WEBHOOK_ARTIFACT_STORE_URI": "s3://team-mlflow/artifacts",
    "MLFLOW_WEBHOOK_TRUST_NAMESPACES": "team-a",
}


def settings_text(values: dict[str, str]) -> str:
    """The example with each named line filled in (uncommented if need be); part A's lines are
    dropped when `values` does not name them, as part B says."""
    lines = []
    for line in EXAMPLE.read_text().splitlines():
        key = line.lstrip("# ").partition("=")[0]
        if PLACEHOLDER not in line:
            lines.append(line)
        elif key in values:
            lines.append(f"{key}={values[key]}")
        elif not line.startswith("#") and key not in GIVEN:
            lines.append(line)
    return "\n".join(lines) + "\n"


def git_view(dest: Path, folder: str = "manifests") -> Path:
    """`folder` as git's index holds it, written under `dest`; returns the copy."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--", folder],
        capture_output=True,
        check=False,
    )
    files = [f for f in listed.stdout.decode().split("\0") if f]
    if listed.returncode != 0 or not files:
        shutil.copytree(ROOT / folder, dest / folder, ignore=shutil.ignore_patterns("settings.env"))
        return dest / folder
    subprocess.run(
        ["git", "-C", str(ROOT), "checkout-index", f"--prefix={dest}/", "--stdin", "-z"],
        input="\0".join(files).encode(),
        check=True,
    )
    _say_what_is_left_out(folder)
    return dest / folder


@functools.cache
def _say_what_is_left_out(folder: str) -> None:
    """Once a run: edits not staged are not what the tests read, which a developer must know."""
    edited = subprocess.run(
        ["git", "-C", str(ROOT), "diff", "--name-only", "--", folder],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    if edited:
        warnings.warn(
            f"the tests read git's index of {folder}/, not these edits: {', '.join(edited)} "
            "(git add them to test them)",
            stacklevel=3,
        )


def filled_copy(dest: Path, values: dict[str, str] | None = None) -> Path:
    """A copy of manifests/ under `dest` with settings.env written; returns the copy."""
    target = git_view(dest)
    (target / "base" / "settings.env").write_text(
        settings_text(GIVEN if values is None else values)
    )
    return target


@functools.cache
def filled() -> Path:
    """One filled copy per test process (part A and part B both set, so every overlay renders)."""
    return filled_copy(Path(tempfile.mkdtemp(prefix="manifests-")), {**GIVEN, **BOOTSTRAP})


def kustomize(folder: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(folder)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]
