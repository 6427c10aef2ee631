"""Served LoRA adapters (`swarm-node start --adapter NAME=DIR`): loaded once, checked, by name.

Each adapter is a PEFT LoRA directory (`swarm.model.peft_adapter`), kept for all blocks of
the model (a few MB at most), so a rebalancing move to other blocks keeps it usable. Its
factors are checked against the blocks' projections at start: a wrong adapter stops the
server with one line, rather than failing clients later.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from node.config import AdapterSpec
from swarm.errors import InvalidInput
from swarm.model.checkpoint import CheckpointError
from swarm.model.families import BlockStack
from swarm.model.families.tuning import check_tuning
from swarm.model.peft_adapter import read_peft_adapter
from swarm.records import BlockRange
from swarm.tuning import Tuning

logger = logging.getLogger(__name__)


def load_adapters(specs: Sequence[AdapterSpec], stack: BlockStack) -> dict[str, Tuning]:
    """Each adapter's factors by name; CheckpointError naming the adapter if one does not fit."""
    adapters = {}
    whole = BlockRange(0, stack.info.num_blocks)
    for spec in specs:
        tuning = read_peft_adapter(spec.path, stack.family, stack.info.num_blocks)
        try:
            check_tuning(tuning, whole, stack.info.hidden_size, None, stack.lora_targets())
        except InvalidInput as error:
            raise CheckpointError(f"adapter {spec.name} ({spec.path}) does not fit {stack.info.model_type}: "
                                  f"{error}") from None
        adapters[spec.name] = tuning
        logger.info("serving adapter %s from %s: LoRA on %d projections, scale %g", spec.name, spec.path,
                    len(tuning.lora), tuning.lora_scale)
    return adapters
