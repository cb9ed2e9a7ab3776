"""Every run of one job, as docs/provenance.md shows it: `mlflow.search_runs` on the job's tag,
from a process whose environment is the injected one. Prints the run ids it found, as JSON."""

import json
import sys

import mlflow

runs = mlflow.search_runs(
    filter_string=sys.argv[1], search_all_experiments=True, output_format="list"
)
print(json.dumps(sorted(run.info.run_id for run in runs)))
