# syntax=docker/dockerfile:1
# mlflow-webhook: build with `docker build -t mlflow-webhook:0.1.0 .`
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Every dependency ships wheels, so the build needs no compiler either.
COPY constraints.txt pyproject.toml README.md ./
COPY webhook ./webhook
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && pip install --only-binary=:all: --constraint constraints.txt /wheels/*.whl \
    && pip uninstall --yes pip setuptools

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="mlflow-webhook" \
      org.opencontainers.image.description="Kubernetes mutating admission webhook that gives opted-in Pods Amazon SageMaker managed-MLflow tracking" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# A numeric non-root user, so runAsNonRoot can verify it without a passwd entry.
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["mlflow-webhook", "serve"]
