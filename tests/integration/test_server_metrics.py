"""A real server's /metrics (who it is, its cache, its process, call latencies, busy time) and health probe."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

import swarm
from client import AutoDistributedModelForCausalLM
from node.healthcheck import main as healthcheck_main
from tests.integration.conftest import RunningSwarm
from tests.integration.slicing_models import VOCAB


def _metrics_url(server_text: str) -> str:
    port = re.search(r"metrics at http://[\d.]+:(\d+)/metrics", server_text)
    assert port is not None, "the server logs where its metrics are"
    return f"http://127.0.0.1:{port.group(1)}"


def test_server_metrics_after_generation_and_training_calls(llama_swarm: RunningSwarm) -> None:
    model = AutoDistributedModelForCausalLM.from_pretrained(llama_swarm.model_dir, llama_swarm.peers)
    try:
        ids = torch.randint(0, VOCAB, (2, 7), generator=torch.Generator().manual_seed(0))
        model.generate(ids, max_new_tokens=4)
        hidden = model.head.embed(ids).detach().requires_grad_(True)
        model.layers(hidden).sum().backward()  # Forward and Backward on every server
    finally:
        model.close()
    for server in llama_swarm.servers:
        base = _metrics_url(server.text())
        text = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert server.info is not None
        info = families["swarm_server_info"].samples[0]
        assert info.labels == {"model": "tiny-llama", "blocks": server.info.blocks, "version": swarm.__version__,
                               "server_id": server.info.server_id}
        assert families["swarm_cache_tokens_capacity"].samples[0].value == 4096
        assert families["process_resident_memory_bytes"].samples[0].value > 0
        latency = {(s.name, s.labels.get("kind")): s.value for s in families["swarm_batch_seconds"].samples}
        assert latency[("swarm_batch_seconds_count", "forward")] >= 1
        assert latency[("swarm_batch_seconds_count", "backward")] >= 1
        assert latency[("swarm_batch_seconds_sum", "forward")] > 0
        busy = {s.labels["kind"]: s.value for s in families["swarm_compute_busy_seconds"].samples
                if s.name == "swarm_compute_busy_seconds_total"}
        assert busy["inference"] > 0 and busy["batch"] > 0
        assert families["swarm_compute_busy_seconds"].type == "counter"
        # the Backward used the graph its Forward kept instead of computing the forward again
        graphs = {s.labels["outcome"]: s.value for s in families["swarm_training_graphs"].samples
                  if s.name == "swarm_training_graphs_total"}
        assert graphs.get("kept") == graphs.get("reused") == 1 and "recomputed" not in graphs, graphs
        assert families["swarm_training_graph_bytes"].samples[0].value == 0  # taken by the Backward


def test_metrics_only_on_their_path(llama_swarm: RunningSwarm) -> None:
    base = _metrics_url(llama_swarm.servers[0].text())
    for path in ("/", "/favicon.ico", "/metrics/x"):
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(f"{base}{path}", timeout=5)
        assert error.value.code == 404, path


def test_container_healthcheck_probe(llama_swarm: RunningSwarm) -> None:
    # the Dockerfile's HEALTHCHECK: 0 while a server says SERVING, 1 when nothing answers
    assert healthcheck_main([llama_swarm.servers[0].address]) == 0
    assert healthcheck_main(["127.0.0.1:1", "--timeout", "1"]) == 1
