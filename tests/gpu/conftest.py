"""tests/gpu/: the CUDA subset (scripts/gpu-check runs it on a machine with a GPU).

Every test here is marked `cuda` and skipped where torch sees no CUDA device, and only
there: the reason says which torch looked, so a CPU build carried to a GPU machine shows
up as skips with "torch ... +cpu", not as a pass.
"""

from __future__ import annotations

import pytest
import torch


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=f"needs a CUDA GPU; torch {torch.__version__} sees none "
                                   "(run scripts/gpu-check on a GPU machine)")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)
