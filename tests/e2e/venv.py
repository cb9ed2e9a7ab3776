"""The end-to-end tests' own virtual environment with full mlflow and the SageMaker plugin.

Full mlflow is large, so it lives apart from the project's environment and is cached between
runs under a path keyed by the hash of `requirements.txt`: only the first run pays for it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
from pathlib import Path

REQUIREMENTS = Path(__file__).with_name("requirements.txt")
CACHE = Path(os.environ.get("MLFLOW_WEBHOOK_E2E_CACHE", Path.home() / ".cache" / "mlflow-webhook"))


def ensure() -> Path:
    """The environment's folder, built once (under a lock, so parallel runs share it)."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes() + sys.version.encode()).hexdigest()[:12]
    path = CACHE / f"e2e-{digest}"
    done = path / ".complete"
    if done.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"e2e-{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(path)], check=True)
            subprocess.run(
                [str(path / "bin" / "pip"), "install", "-q", "-r", str(REQUIREMENTS)],
                check=True,
            )
            done.touch()
    return path


if __name__ == "__main__":
    print(ensure())
