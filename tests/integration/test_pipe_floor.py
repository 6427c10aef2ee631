"""The bench's floors: real worker processes joined by pipes, or by gRPC streams, compute the real model."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from devtools.bench.grpc_floor import GrpcFloor
from devtools.bench.pipe_floor import PipeFloor, read_hidden, unpack_hidden, write_hidden
from devtools.bench.workloads import LocalReference, lockstep
from devtools.launcher import shared_cpu_env
from swarm.records import BlockRange
from tests.integration.slicing_models import save_checkpoint


def test_frames_round_trip_and_a_cut_frame_is_an_error() -> None:
    stream = io.BytesIO()
    hidden = torch.randn(1, 3, 8)
    write_hidden(stream, 5, hidden)
    write_hidden(stream, 8, hidden[:, :1])
    stream.seek(0)
    first, second = read_hidden(stream), read_hidden(stream)
    assert first is not None and second is not None
    assert first[0] == 5 and torch.equal(first[1], hidden)
    assert second[0] == 8 and torch.equal(second[1], hidden[:, :1])
    assert read_hidden(stream) is None
    with pytest.raises(EOFError, match="inside a message"):
        read_hidden(io.BytesIO(stream.getvalue()[:20]))
    with pytest.raises(EOFError, match="does not hold"):  # a gRPC floor frame is whole or an error
        unpack_hidden(stream.getvalue()[:20])


@pytest.mark.parametrize("floor_type", [PipeFloor, GrpcFloor])
def test_a_floor_decodes_exactly_like_the_local_model(tmp_path: Path, floor_type: type[PipeFloor | GrpcFloor]
                                                      ) -> None:
    path = str(save_checkpoint("llama", tmp_path / "llama", layers=4))
    prompt = torch.randint(0, 100, (1, 7), generator=torch.Generator().manual_seed(1))
    expected = LocalReference(path).decode(prompt, 8)
    spans = [BlockRange(0, 1), BlockRange(1, 3), BlockRange(3, 4)]
    floor = floor_type(path, spans, shared_cpu_env({"OMP_NUM_THREADS": "1"}))
    try:
        first = floor.decode(prompt, 8)
        again = floor.decode(prompt, 8)  # a new sequence starts a fresh cache in every worker
    finally:
        floor.close()
    assert first.tokens == expected.tokens == again.tokens
    assert len(first.step_seconds) == 8 and all(s > 0 for s in first.step_seconds)
    assert floor.exit_codes == [0, 0, 0]


def test_decodings_in_lockstep_equal_each_on_its_own(tmp_path: Path) -> None:
    path = str(save_checkpoint("llama", tmp_path / "llama", layers=4))
    prompt = torch.randint(0, 100, (1, 5), generator=torch.Generator().manual_seed(2))
    local = LocalReference(path)
    alone = local.decode(prompt, 6)
    floor = PipeFloor(path, [BlockRange(0, 2), BlockRange(2, 4)], shared_cpu_env({"OMP_NUM_THREADS": "1"}))
    try:
        runs = lockstep({"floor": floor.decoding(prompt, 6), "local": local.decoding(prompt, 6)})
    finally:
        floor.close()
    assert runs["floor"].tokens == runs["local"].tokens == alone.tokens
    assert all(len(run.step_seconds) == 6 and run.prefill_seconds > 0 for run in runs.values())
    assert not torch.is_inference_mode_enabled()  # no decoding left inference mode on between pieces
