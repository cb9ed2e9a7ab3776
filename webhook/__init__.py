"""mlflow-webhook: a mutating admission webhook that wires Pods to SageMaker managed MLflow."""

__version__ = "0.1.0"
