# mlflow-webhook: build with `docker build -t mlflow-webhook:0.1.0 .`
# No `# syntax=` line: it makes BuildKit fetch its frontend from Docker Hub, which an air-gapped
# build cannot reach, and nothing here needs more than the frontend built into Docker.
# PYTHON_IMAGE: any Debian-based Python 3.11 image with `python` and `venv` (see docs/image.md).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Every dependency ships wheels, so the build needs no compiler either.
COPY constraints.txt pyproject.toml README.md ./
COPY webhook ./webhook
# Then drop what is never imported at run time: pip and setuptools, the Kubernetes client's
# asyncio copy of itself (kubernetes.aio, about 70 MB), botocore's models of the services the
# bootstrap never calls (about 27 MB; tests/test_image.py checks the list against the code),
# and tests folders. Bytecode stays: it saves compiling at every start.
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && pip install --only-binary=:all: --constraint constraints.txt /wheels/*.whl \
    && pip uninstall --yes pip setuptools \
    && site="$(python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
    && rm -r "$site/kubernetes/aio" \
    && find "$site/botocore/data" -mindepth 1 -maxdepth 1 -type d \
        -not -name eks -not -name iam -not -name s3 -not -name sagemaker -not -name sts \
        -exec rm -r {} + \
    && find "$site" -depth -type d -name tests -exec rm -r {} +

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
# The command line, serving by default: `docker run IMAGE --version` (or inject, audit, ...)
# runs that instead, and the Deployment names `serve` in its args.
ENTRYPOINT ["mlflow-webhook"]
CMD ["serve"]
