from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import WebhookProcess, start


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookProcess]:
    """One real server over TLS with a generated CA, shared by a module's tests."""
    server = start(Path(tmp_path_factory.mktemp("certs")))
    yield server
    server.stop()
