"""The IAM action of each MLflow REST call, as SageMaker's front door authorizes it.

SageMaker names the `sagemaker-mlflow` actions after MLflow's RPCs: POST /api/2.0/mlflow/runs/
create is sagemaker-mlflow:CreateRun, POST .../runs/log-metric is LogMetric, GET
.../experiments/get-by-name is GetExperimentByName (Service Authorization Reference, "Amazon
SageMaker with MLflow",
https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonsagemakerwithmlflow.html).
The table is read from the MLflow server's own route list (`mlflow.server.handlers.
get_endpoints`, each route with its RPC's request message), in the end-to-end environment, so it
follows the pinned MLflow rather than a copy of it. Routes that are no RPC (MLflow's OTLP span
intake at /v1/traces, /api/3.0/mlflow/server-info) have no action here or in the Reference; the
front door lets them through only for a caller granted every sagemaker-mlflow action.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess

from tests.e2e import venv

_DUMP = """
import json
from mlflow.server.handlers import get_endpoints

rows = get_endpoints(get_handler=lambda request: request.__name__)
print(json.dumps([[m, p, h] for p, h, ms in rows if isinstance(h, str) for m in ms]))
"""


@functools.cache
def table() -> tuple[tuple[str, re.Pattern[str], str], ...]:
    python = venv.ensure() / "bin" / "python"
    out = subprocess.run(
        [str(python), "-c", _DUMP], capture_output=True, text=True, check=True, timeout=300
    ).stdout
    rows = json.loads(out.strip().splitlines()[-1])
    # Flask's <name> and <path:name> parameters match one segment, or the rest of the path.
    return tuple(
        (method, re.compile(_pattern(path)), rpc)
        for method, path, rpc in rows
        if path.startswith("/api/")
    )


def _pattern(path: str) -> str:
    out = ""
    for literal, param in re.findall(r"([^<]*)(<[^>]+>)?", path):
        out += re.escape(literal)
        if param:
            out += ".+" if param.startswith("<path:") else "[^/]+"
    return out


def rpc(method: str, path: str) -> str | None:
    """The MLflow RPC a request is, such as "CreateRun"; None for a route that is no RPC."""
    for m, pattern, name in table():
        if m == method and pattern.fullmatch(path):
            return name
    return None
