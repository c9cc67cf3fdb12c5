"""Refusing skill inventories that cannot fit in memory, before anything is allocated.

A rank or skill count typed with a few zeros too many would otherwise reach torch's
allocator, which fails with an error about storage sizes (or, just below the machine's
memory, succeeds and swaps). The check counts what training keeps per value of the
skills: the float32 weight, its gradient and AdamW's two moments.
"""

from __future__ import annotations

import os

import torch

BYTES_PER_TRAINED_VALUE = 16  # float32 weight + gradient + two AdamW moments


def device_memory_bytes(device: torch.device) -> int | None:
    """The memory of ``device``: a GPU's total, the machine's RAM for the CPU; None where unknown."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type == "cpu" and hasattr(os, "sysconf"):
        try:
            return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return None
    return None


def check_skill_memory(n_values: int, layer: str, device: torch.device, config) -> None:
    """Raise a ValueError when ``n_values`` trained values would not fit in ``device``'s memory.

    ``config`` is the layer's :class:`~skillfit.skills.SkillConfig`, whose sizes the
    message names.
    """
    total = device_memory_bytes(device)
    need = n_values * BYTES_PER_TRAINED_VALUE
    if total is None or need <= total:
        return
    raise ValueError(
        f"The skills of layer {layer!r} would hold {n_values:,} trained values: {need / 2**30:,.1f} GiB with their "
        f"gradients and AdamW state, more than the {total / 2**30:,.1f} GiB of memory of {device}. Lower rank "
        f"(now {config.rank}), the number of skills (n_skills / n_shared, now {config.n_shared}; n_exclusive, now "
        f"{config.n_exclusive}) or the exclusive rank (task_rank / exclusive_rank, now {config.task_rank})."
    )
