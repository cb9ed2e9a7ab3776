"""The AWS adapter: the bootstrap that keeps IAM, S3 and the SageMaker MLflow server in place."""
