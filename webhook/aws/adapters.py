"""Each kind's calls, by its description: the one table from webhook.core.kinds to the modules
that call SageMaker for it."""

from __future__ import annotations

from webhook.aws.apps import App
from webhook.aws.mlflow import Mlflow
from webhook.aws.tracking import TrackingServer
from webhook.core.kinds import Kind

ALL: tuple[Mlflow, ...] = (TrackingServer(), App())
_BY_NAME = {adapter.kind.name: adapter for adapter in ALL}


def of(kind: Kind) -> Mlflow:
    return _BY_NAME[kind.name]
