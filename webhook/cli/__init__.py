"""The command line: `mlflow-webhook serve | inject | certs`."""
