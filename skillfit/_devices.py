"""Where a fit or prediction runs: ``device="auto"`` and the GPU with the most free memory."""

from __future__ import annotations

import os

import torch



# Device types a fit or prediction can run on.
DEVICE_TYPES = ("cpu", "cuda", "mps")
# GPUs whose free memory is within this of the roomiest count as equally free (see roomiest_gpu).
GPU_FREE_MEMORY_BAND = 1 << 30


def resolve_device(device: str) -> torch.device:
    """``"auto"`` is the CUDA device with the most free memory when CUDA is available, else the CPU.

    Other strings name a torch device. See :func:`roomiest_gpu` for how ``"auto"``
    chooses among several GPUs.
    """
    if device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        if "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            return torch.device("cuda", int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())  # a rank's GPU
        return torch.device("cuda", roomiest_gpu())
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device={device!r} names no device; use 'auto', 'cpu', 'cuda' or 'cuda:N'.") from error
    if resolved.type not in DEVICE_TYPES:
        raise ValueError(
            f"device={device!r}: skillfit trains on {', '.join(map(repr, DEVICE_TYPES))} devices, not "
            f"{resolved.type!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'."
        )
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available; use device='auto' or 'cpu'.")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ValueError(
            f"device={device!r}, but {torch.cuda.device_count()} GPU(s) are visible; use 'cuda:0' to "
            f"'cuda:{torch.cuda.device_count() - 1}', or 'auto'."
        )
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r} was requested but MPS is not available; use device='auto' or 'cpu'.")
    return resolved


def roomiest_gpu() -> int:
    """The index of the visible GPU with the most free memory.

    GPUs within ``GPU_FREE_MEMORY_BAND`` (1 GiB) of the roomiest count as equally free;
    among them, worker ``i`` of a process pool (joblib's loky workers, multiprocessing
    pools) takes the ``i``-th, so the workers of a search that start together on idle
    GPUs spread over them instead of all choosing the first. Free memory is read
    through NVML (``pynvml``), which opens no CUDA context; without NVML, memory is
    not read (CUDA's own query would open a context on every GPU) and the workers
    spread over all GPUs by number.
    """
    count = torch.cuda.device_count()
    if count <= 1:
        return 0
    free = [_free_memory(index) for index in range(count)]
    if any(value is None for value in free):
        return _worker_number() % count
    roomiest = [index for index in range(count) if free[index] >= max(free) - GPU_FREE_MEMORY_BAND]
    return roomiest[_worker_number() % len(roomiest)]


def _free_memory(index: int) -> int | None:
    """Free bytes on GPU ``index`` from NVML (total minus used), or None without NVML."""
    try:
        return torch.cuda.get_device_properties(index).total_memory - torch.cuda.device_memory_used(index)
    except Exception:  # no pynvml, or a torch without device_memory_used
        return None


def _worker_number() -> int:
    """0 in a plain process; ``i - 1`` in the ``i``-th worker a process pool started."""
    import multiprocessing

    identity = multiprocessing.current_process()._identity
    return identity[-1] - 1 if identity else 0
