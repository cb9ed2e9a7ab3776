"""A training process that logs a metric and an artifact, then reads the artifact back as a
later job would: prints `STEP <name>` after each step it completes, so a test can tell which
step a refusal stopped. Everything comes from the environment the webhook injected."""

import os
import tempfile

import mlflow

with mlflow.start_run() as run:
    print("STEP run", flush=True)
    mlflow.log_metric("foo", 1)
    print("STEP metric", flush=True)
    path = os.path.join(tempfile.mkdtemp(), "notes.txt")
    with open(path, "w") as f:
        f.write("trained by a Pod the webhook wired up\n")
    mlflow.log_artifact(path)
    print("STEP artifact", flush=True)
listed = [f.path for f in mlflow.MlflowClient().list_artifacts(run.info.run_id)]
print("STEP listed", flush=True)
# From the run's artifact URI: by run ID, MLflow hides why a download failed.
back = mlflow.artifacts.download_artifacts(
    artifact_uri=f"{run.info.artifact_uri}/notes.txt", dst_path=tempfile.mkdtemp()
)
with open(back) as f:
    print(f"READ {f.read().strip()}")
print("STEP read", flush=True)
print(f"LISTED={','.join(listed)}")
print(f"RUN_ID={run.info.run_id}")
