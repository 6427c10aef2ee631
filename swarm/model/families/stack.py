"""A contiguous range of transformer blocks loaded from a checkpoint, and its KV caches.

`load_block_stack` reads only the tensors of the served blocks (lazily, block by block)
and builds each decoder layer on the meta device before assigning its weights, so peak
memory is the served blocks, not the model. `BlockStack.forward` runs hidden states
through any sub-range of the served blocks, statelessly or appending to a `SessionCache`.

A `SessionCache` holds one single-layer transformers `DynamicCache` per block of the
session's sub-range, and every layer's cache slot is 0: a session over blocks 1:3 of a
server holding 0:4 then never sees empty slots, and the causal mask is sized from the
first layer's cache, which is always the right one.

What this module does not do: budgets (the KV budget module uses
`cache_bytes_per_token`), session bookkeeping or the wire format.
"""

from __future__ import annotations

import contextlib
import logging
import os

import torch
from torch import nn
from transformers.cache_utils import DynamicCache

from swarm.model.checkpoint import CheckpointError, CheckpointReader, load_config, locate_checkpoint
from swarm.model.device import serving_dtype
from swarm.model.families.base import Family, ModelInfo
from swarm.model.families.detect import family_class, model_info
from swarm.model.families.tuning import add_prompt, block_factors, lora_applied, lora_targets
from swarm.model.options import check_quantization
from swarm.model.quantize import quantize_layer, resident_bytes
from swarm.errors import InvalidInput, NotServed, SessionStateError
from swarm.progress import progress_bar
from swarm.records import BlockRange
from swarm.tuning import Tuning

logger = logging.getLogger(__name__)


def _kv_tensors(layer_cache: DynamicCache) -> list[torch.Tensor]:
    """The key and value tensors held by a one-layer cache (none while empty)."""
    tensors = []
    for layer in layer_cache.layers:
        for name in ("keys", "values"):
            tensor = getattr(layer, name, None)
            if isinstance(tensor, torch.Tensor) and tensor.numel():
                tensors.append(tensor)
    return tensors


class SessionCache:
    """The KV cache of one inference session over `blocks` (absolute block indices)."""

    def __init__(self, blocks: BlockRange) -> None:
        self.blocks = blocks
        self.layers: list[DynamicCache] = [DynamicCache() for _ in range(len(blocks))]

    @property
    def length(self) -> int:
        """Tokens cached so far (the same in every layer)."""
        return int(self.layers[0].get_seq_length())

    @property
    def batch_size(self) -> int | None:
        """Batch size of the cached tokens; None while empty."""
        tensors = _kv_tensors(self.layers[0])
        return int(tensors[0].shape[0]) if tensors else None

    def crop(self, length: int) -> None:
        """Drops cached positions >= `length` (rewind for replay or regeneration)."""
        if length < 0:
            raise InvalidInput(f"cannot crop a KV cache to a negative length {length}")
        excess = self.length - length
        if excess > 0:
            for layer_cache in self.layers:
                layer_cache.crop(-excess)

    def reorder(self, batch_indices: torch.Tensor) -> None:
        """Keeps (and reorders) the given batch rows, e.g. the surviving beam hypotheses."""
        for layer_cache in self.layers:
            layer_cache.batch_select_indices(batch_indices)

    def nbytes(self) -> int:
        """Bytes held by the cached keys and values."""
        return sum(t.numel() * t.element_size() for c in self.layers for t in _kv_tensors(c))


class BlockStack:
    """Blocks `blocks` of a model, ready to run (weights frozen, eval mode)."""

    def __init__(
        self,
        info: ModelInfo,
        blocks: BlockRange,
        dtype: torch.dtype,
        family: Family,
        layers: nn.ModuleList,
        loaded_bytes: int = 0,
        quantization: str = "none",
    ) -> None:
        self.info = info
        self.blocks = blocks
        self.dtype = dtype
        self.family = family
        self.layers = layers
        self.loaded_bytes = loaded_bytes  # checkpoint bytes read to build the layers
        self.quantization = quantization  # "none", "int8" or "nf4" (swarm.model.quantize)

    @property
    def device(self) -> torch.device:
        return self.family.device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.layers.parameters())

    def block_bytes(self) -> int:
        """Bytes the served blocks' weights hold on their device, per block (quantized or not)."""
        return resident_bytes(self.layers) // max(len(self.layers), 1)

    def _check_served(self, blocks: BlockRange) -> None:
        if not self.blocks.covers(blocks):
            raise NotServed(f"blocks {blocks} requested, this stack holds {self.blocks}")

    def new_cache(self, blocks: BlockRange) -> SessionCache:
        """An empty KV cache for a session over `blocks` (a sub-range of `self.blocks`)."""
        self._check_served(blocks)
        return SessionCache(blocks)

    @staticmethod
    def cache_length(cache: SessionCache) -> int:
        return cache.length

    @staticmethod
    def crop_cache(cache: SessionCache, length: int) -> None:
        cache.crop(length)

    def cache_bytes_per_token(self, blocks: BlockRange) -> int:
        """KV-cache bytes one token (one batch row) costs across `blocks`."""
        self._check_served(blocks)
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        return len(blocks) * self.family.kv_elements_per_token() * itemsize

    def forward(
        self,
        hidden: torch.Tensor,
        *,
        blocks: BlockRange,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: SessionCache | None = None,
        tuning: Tuning | None = None,
    ) -> torch.Tensor:
        """Runs hidden states [B, T, H] through `blocks`; returns [B, T, H] in `self.dtype`, on
        the device `hidden` came from (the work and the KV cache are on `self.device`).

        `position_ids` [B, T] are the tokens' positions (HF generate: cumsum(mask) - 1,
        0 at padding); `attention_mask` [B, past + T] is 1 for real tokens, 0 for padding
        (None: all ones). With `cache`, the call appends its keys/values (prefill or
        single steps) and runs under inference mode; without, it is a stateless forward
        that honours the caller's grad mode (for backward passes w.r.t. `hidden` and the
        `tuning` tensors: deep prompts and LoRA factors, checked by the caller with
        `check_tuning`).
        """
        self._check_served(blocks)
        if cache is not None and cache.blocks != blocks:
            raise SessionStateError(f"session cache covers blocks {cache.blocks}, not {blocks}")
        past = cache.length if cache is not None else 0
        origin = hidden.device  # the caller's (the CPU, where the codec works); blocks may be on a GPU
        hidden, position_ids, attention_mask = self._prepare_inputs(
            hidden, position_ids, attention_mask, past, cache
        )
        mode = torch.inference_mode() if cache is not None else contextlib.nullcontext()
        with mode:
            mask_cache = cache.layers[0] if cache is not None else None
            context = self.family.make_context(hidden, position_ids, attention_mask, mask_cache, blocks)
            for index in range(blocks.start, blocks.end):
                layer = self.layers[index - self.blocks.start]
                layer_cache = cache.layers[index - blocks.start] if cache is not None else None
                if tuning is not None and index in tuning.prompts:
                    hidden = add_prompt(hidden, tuning.prompts[index], past)
                with lora_applied(layer, block_factors(tuning, index), tuning.lora_scale if tuning else 1.0):
                    hidden = self.family.run_layer(layer, index, hidden, context, layer_cache)
        return hidden.to(origin)  # (differentiable: a backward pass reaches the caller's tensor)

    def lora_targets(self) -> dict[str, tuple[int, int]]:
        """The projections LoRA may target in every block: path in the layer -> (out, in)."""
        return lora_targets(self.layers[0])

    __call__ = forward

    def _prepare_inputs(
        self,
        hidden: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        past: int,
        cache: SessionCache | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Validates shapes (peer data is untrusted) and moves everything to device/dtype."""
        size = self.info.hidden_size
        if hidden.ndim != 3 or hidden.shape[1] == 0 or hidden.shape[2] != size:
            raise InvalidInput(f"hidden states must be [B, T>0, {size}], got {list(hidden.shape)}")
        if not hidden.is_floating_point():
            raise InvalidInput(f"hidden states must be floating point, got {hidden.dtype}")
        batch, length = hidden.shape[0], hidden.shape[1]
        if cache is not None and cache.batch_size not in (None, batch):
            raise SessionStateError(f"session batch size is {cache.batch_size}, got {batch}")
        shape = tuple(position_ids.shape)
        if shape not in ((batch, length), (1, length)):
            raise InvalidInput(f"position_ids must be [{batch}, {length}], got {list(shape)}")
        if position_ids.is_floating_point() or position_ids.is_complex() or bool((position_ids < 0).any()):
            raise InvalidInput("position_ids must be non-negative integers")
        if attention_mask is None:
            attention_mask = torch.ones(batch, past + length, dtype=torch.long)
        elif tuple(attention_mask.shape) != (batch, past + length):
            raise InvalidInput(
                f"attention_mask must be [{batch}, past {past} + {length}], "
                f"got {list(attention_mask.shape)}"
            )
        device = self.device
        return (
            hidden.to(device=device, dtype=self.dtype),
            position_ids.to(device=device, dtype=torch.long),
            attention_mask.to(device=device, dtype=torch.long),
        )


def _layer_keys(keys: list[str], family: Family, base: str, blocks: BlockRange) -> dict[int, list[str]]:
    """Checkpoint keys of each served block."""
    by_block: dict[int, list[str]] = {i: [] for i in range(blocks.start, blocks.end)}
    for index in by_block:
        prefix = family.layer_prefix(base, index)
        by_block[index] = [k for k in keys if k.startswith(prefix)]
        if not by_block[index]:
            raise CheckpointError(f"the checkpoint has no tensors for block {index} ({prefix}*)")
    return by_block


def load_block_stack(
    path: str | os.PathLike[str],
    blocks: BlockRange,
    dtype: torch.dtype | str = "auto",
    device: torch.device | str = "cpu",
    progress: bool = False,
    quantization: str = "none",
) -> BlockStack:
    """Loads blocks [start, end) of a checkpoint directory (or hub id) and nothing else.

    `dtype`: "auto" (the checkpoint's; on a GPU a 16-bit one, see `swarm.model.device`),
    float32, bfloat16 or float16. `quantization`: "none", "int8" or "nf4"
    (`swarm.model.quantize`), applied block by block as each is read. `progress` shows a
    progress bar (one step per block) on a terminal's stderr, else periodic log lines.
    """
    check_quantization(quantization)
    config = load_config(locate_checkpoint(path))
    info = model_info(config)
    if blocks.end > info.num_blocks:
        raise CheckpointError(f"blocks {blocks} requested, the model has blocks 0:{info.num_blocks}")
    family = family_class(config)(config, device)
    torch_dtype = serving_dtype(dtype, config, family.device)
    # bitsandbytes quantizes a weight as it moves off the CPU: quantized blocks are read there
    read_device = family.device if quantization == "none" else torch.device("cpu")
    # Every prefix a served block's tensors may have (before the checkpoint's is known).
    served = range(blocks.start, blocks.end)
    starts = tuple(family.layer_prefix(b, i) for b in family.base_prefixes for i in served)
    reader = CheckpointReader(locate_checkpoint(path, wanted=lambda key: key.startswith(starts)))
    keys = reader.keys()
    base = family.base_prefix(keys)
    layers = nn.ModuleList()
    per_block = _layer_keys(keys, family, base, blocks).items()
    shown = progress_bar(per_block, desc=f"loading blocks {blocks}", unit="block", enabled=progress)
    for index, block_keys in shown:
        prefix = family.layer_prefix(base, index)
        weights = reader.read(block_keys, dtype=torch_dtype, device=read_device)
        layer = family.build_layer(index, {k[len(prefix) :]: v for k, v in weights.items()})
        del weights  # the layer holds them now; quantizing drops the float copy
        layers.append(layer if quantization == "none" else
                      quantize_layer(layer, quantization, torch_dtype, family.device))
        logger.debug("loaded block %s of %s", index, path)
    stack = BlockStack(info, blocks, torch_dtype, family, layers, loaded_bytes=reader.bytes_read,
                       quantization=quantization)
    logger.info(
        "loaded blocks %s of %s (%s, %s, %s, quantization %s, on %s): %.1f MiB read, %.1f MiB held per block",
        blocks, path, info.model_type, family.name, torch_dtype, quantization, family.device,
        reader.bytes_read / 2**20, stack.block_bytes() / 2**20,
    )
    return stack
