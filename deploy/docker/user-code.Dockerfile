# The user-code image: the heat_platform code location (the gRPC server of the Helm chart's user
# deployment) and every pod it launches (run workers, one pod per step, the GPU training step).
# Build from the repository root:
#   docker build -f deploy/docker/user-code.Dockerfile -t registry.local/heat-platform/user-code:0.1.0 .
# Python packages are exactly constraints.txt, the set the test suite runs on. torch comes from
# the package index: on x86_64 Linux that wheel carries CUDA, which the training step uses on
# its GPU node (a CPU-only cluster may point TORCH_INDEX_URL at PyTorch's CPU wheel index).
FROM python:3.11-slim-bookworm

ARG TORCH_INDEX_URL=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DDE_BACKEND=pytorch \
    MLFLOW_DISABLE_TELEMETRY=true \
    BENTOML_DO_NOT_TRACK=True \
    DO_NOT_TRACK=1 \
    HEAT_PLATFORM_DEPLOYMENT=kubernetes \
    HEAT_PLATFORM_HOME=/var/lib/heat-platform \
    DAGSTER_HOME=/opt/dagster/dagster_home

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

RUN groupadd --gid 10001 heat \
    && useradd --uid 10001 --gid heat --create-home --shell /usr/sbin/nologin heat \
    && mkdir -p /var/lib/heat-platform /opt/dagster/dagster_home \
    && chown heat:heat /var/lib/heat-platform /opt/dagster/dagster_home

WORKDIR /opt/heat-platform

# The dependencies first: a layer that changes only with the pins.
COPY constraints.txt ./
# (the index for torch only: a subshell, so the other packages come from the usual index)
RUN (if [ -n "$TORCH_INDEX_URL" ]; then export PIP_INDEX_URL="$TORCH_INDEX_URL"; fi; \
        pip install --no-cache-dir torch==2.13.0) \
    && grep -v '^torch==' constraints.txt > /tmp/requirements.txt \
    && pip install --no-cache-dir --requirement /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY pyproject.toml README.md dagster.yaml workspace.yaml ./
COPY heat_platform ./heat_platform
COPY bentos ./bentos
# Editable, so the package finds its checkout beside it (bentos/heat_service, dagster.yaml).
RUN pip install --no-cache-dir --no-deps --editable .

USER 10001:10001
EXPOSE 3030
# What the Helm chart runs too (`dagster api grpc` with the deployment's dagsterApiGrpcArgs).
CMD ["dagster", "api", "grpc", "--module-name", "heat_platform.definitions", "--host", "0.0.0.0", "--port", "3030"]
