"""The install doc (docs/install.md) is run in the checkout itself, and edits it: settings.env made
and filled in, the image's name set in kustomization.yaml, webhook-policy.json written. The
tests must not mind. In a scratch copy of this checkout, with every edit the install doc asks for
made, the tests that read `manifests/` pass (they read git's view of it,
`testing/kube/settings.py`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from testing.kube.settings import GIVEN, ROOT, settings_text
from tests.test_install import install_blocks

# The tests that read manifests/ or the files beside it; the cluster's own need no second run.
INSTALL = ROOT / "docs" / "install.md"
AFFECTED = ["tests/test_settings_file.py", "tests/test_manifests.py"]
STEP_3 = re.compile(r"\*\*3\. Build and push the image\*\*.*?```sh\n(?P<body>.*?)```", re.DOTALL)

pytestmark = [
    pytest.mark.skipif(shutil.which("git") is None, reason="the scratch copy is a git checkout"),
    pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl renders kustomize"),
]


def git(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )


def scratch_clone(dest: Path) -> Path:
    """What a fresh clone of this checkout would hold: every tracked file as it is on disk now
    (so a change not yet committed is tested too), committed in a repository of its own."""
    listed = git("ls-files", "-z", cwd=ROOT)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: nothing to clone")
    for name in filter(None, listed.stdout.split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    for args in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "clone"],
    ):
        assert git(*args, cwd=dest).returncode == 0, args
    return dest


@pytest.mark.timeout(900)
def test_the_install_docs_edits_break_no_test(tmp_path: Path) -> None:
    home = scratch_clone(tmp_path / "checkout")
    # Step 2: the settings file, copied as the install doc's block says, then filled in (part A).
    for line in install_blocks()["settings"]:
        subprocess.run(["bash", "-euo", "pipefail", "-c", line], cwd=home, check=True)
    (home / "manifests" / "base" / "settings.env").write_text(settings_text(GIVEN))
    # Step 3: the image's name, as written; building and pushing it changes no file.
    found = STEP_3.search(INSTALL.read_text())
    assert found, "the install doc's step 3 block"
    edits = [line for line in found["body"].splitlines() if not line.startswith("docker ")]
    subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(edits)], cwd=home, check=True)
    # Part B's policy file, written offline into the checkout as the install doc shows it.
    [policy] = [
        line
        for line in re.sub(r"\\\n\s*", "", INSTALL.read_text()).splitlines()
        # The command as a person types it (not the commands table, which names the flags).
        if line.strip().startswith("mlflow-webhook iam-policy") and "--account" in line
    ]
    command = policy.strip().replace("mlflow-webhook", f"{sys.executable} -m webhook", 1)
    no_aws = {"AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}
    subprocess.run(command, shell=True, cwd=home, check=True, env={**os.environ, **no_aws})
    changed = git("status", "--porcelain", cwd=home).stdout
    assert "manifests/base/kustomization.yaml" in changed, changed
    assert "webhook-policy.json" in changed, changed

    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *AFFECTED],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout, done.stdout[-2000:]
