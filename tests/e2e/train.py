"""The training process of the end-to-end chain: the recipe's snippet, plus a parameter and an
artifact. It calls no set_tracking_uri and holds no credentials: everything comes from the
environment the webhook injected."""

import os
import tempfile

import mlflow

with mlflow.start_run() as run:
    mlflow.log_metric("foo", 1)
    mlflow.log_param("learning_rate", "0.001")
    path = os.path.join(tempfile.mkdtemp(), "notes.txt")
    with open(path, "w") as f:
        f.write("trained by a Pod the webhook wired up\n")
    mlflow.log_artifact(path)
print(mlflow.search_runs())
print(f"RUN_ID={run.info.run_id}")
