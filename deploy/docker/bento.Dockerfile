# The serving image of one bento (what `bentoml containerize` builds where a Docker engine and
# the network are at hand): the bento's directory, served by `bentoml serve`, unprivileged.
# Build context: a directory holding the bento, the pins and the requirements, e.g. for
# heat_service:<version> (export it where the platform home is mounted):
#   bentoml export heat_service:<version> heat_service.bento
#   mkdir -p build/bento && tar -xf heat_service.bento -C build/bento
#   cp constraints.txt deploy/docker/bento-requirements.txt build/
#   docker build -f deploy/docker/bento.Dockerfile -t registry.local/heat-platform/heat_service:<version> build
# The Deployment written with the bento (heat_platform/serving/kubernetes.py) names that tag.
FROM python:3.11-slim-bookworm

# Serving runs on CPU: point this at PyTorch's CPU wheel index to leave CUDA out (~2 GB).
ARG TORCH_INDEX_URL=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BENTOML_DO_NOT_TRACK=True \
    DO_NOT_TRACK=1 \
    BENTOML_HOME=/home/bentoml/.bentoml \
    HEAT_SERVING_LOG_DIR=/var/log/heat-serving

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

RUN groupadd --gid 10001 bentoml \
    && useradd --uid 10001 --gid bentoml --create-home --home-dir /home/bentoml \
        --shell /usr/sbin/nologin bentoml

COPY constraints.txt bento-requirements.txt /tmp/
# (the index for torch only: a subshell, so the other packages come from the usual index)
RUN (if [ -n "$TORCH_INDEX_URL" ]; then export PIP_INDEX_URL="$TORCH_INDEX_URL"; fi; \
        pip install --no-cache-dir torch==2.13.0) \
    && grep -v '^torch==' /tmp/constraints.txt > /tmp/pins.txt \
    && pip install --no-cache-dir --requirement /tmp/bento-requirements.txt --constraint /tmp/pins.txt \
    && rm /tmp/constraints.txt /tmp/bento-requirements.txt /tmp/pins.txt

COPY --chown=root:root bento /home/bentoml/bento

USER 10001:10001
WORKDIR /home/bentoml
EXPOSE 3000
# The bento's directory alone: its models are inside it, no model store is read.
CMD ["bentoml", "serve", "/home/bentoml/bento", "--host", "0.0.0.0", "--port", "3000"]
