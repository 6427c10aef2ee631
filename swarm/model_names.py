"""How a model is named on the swarm: servers announce it, clients ask for it."""

from __future__ import annotations

import os
from pathlib import Path


def model_name_of(path_or_id: str | os.PathLike[str]) -> str:
    """The swarm name of a checkpoint: a local directory's base name, or the hub id as is."""
    path = Path(path_or_id)
    if path.is_dir():
        return path.resolve().name
    return str(path_or_id)
