"""SIGTERM while `serve` waits at startup for its tracking server to be created: the wait ends
at once, what started stops in the reverse order, and the process exits 0, with no
AWS call left holding it open."""

from __future__ import annotations

from pathlib import Path

from testing.metrics import value
from tests.aws.moto import Moto, serve_bootstrapping
from tests.aws.sagemaker import SageMakerEmulator


def test_sigterm_ends_the_wait_for_a_tracking_server(
    aws: tuple[Moto, SageMakerEmulator], tmp_path: Path
) -> None:
    _, emulator = aws
    emulator.transition_seconds = 3600.0  # still Creating when the signal comes
    server = serve_bootstrapping(tmp_path, "s3://team-mlflow/artifacts")
    try:
        server.wait_for_log("tracking server mlflow-tracking: Creating", timeout=60)
        assert value(server, "mlflow_webhook_ready") == 0
        assert server.terminate() == 0
        server.wait_for_log("stopped")
    finally:
        server.stop()
    messages = [str(entry.get("msg")) for entry in server.logs]
    assert messages[-2:] == ["shutting down; finishing requests in flight", "stopped"]
    assert "serving" not in messages
    assert not any("Traceback" in line for line in server.stderr_lines)
