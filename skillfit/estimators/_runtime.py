"""Process state around a fit or a prediction: seeds, deterministic kernels, quiet libraries, autocast.

Each helper is a scope that restores what it changed, so an estimator never leaves the
caller's RNGs, logging levels or determinism settings altered. That state belongs to the
process, so the scopes are safe under threads: the seeded ones (``reproducible_torch``)
run one at a time, and the quiet one silences the libraries while any thread is inside
it and restores them when the last leaves.
"""

from __future__ import annotations

import copy
import logging
import os
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch


@contextmanager
def quiet_libraries(verbose: int) -> Iterator[None]:
    """Below ``verbose=2``, silence transformers' logs, progress bars and warnings.

    Only our own lines are printed at ``verbose=1``; everything shows at ``verbose=2``.
    The levels are the process's: the first thread in silences them, the last one out
    restores what the first found.
    """
    if verbose >= 2:
        yield
        return
    with _QUIET_LOCK:
        if _QUIET["depth"] == 0:
            _QUIET["restore"] = _silence_libraries()
        _QUIET["depth"] += 1
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _QUIET["depth"] -= 1
            if _QUIET["depth"] == 0:
                _QUIET.pop("restore")()


_QUIET_LOCK = threading.Lock()
_QUIET: dict[str, Any] = {"depth": 0}


def _silence_libraries():
    """Silence transformers, huggingface_hub and their warnings; return the function that undoes it."""
    from transformers.utils import logging as hf_logging

    previous_level = hf_logging.get_verbosity()
    bars_were_enabled = hf_logging.is_progress_bar_enabled()
    hub_logger = logging.getLogger("huggingface_hub")
    previous_hub_level = hub_logger.level
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    hub_logger.setLevel(logging.ERROR)
    caught = warnings.catch_warnings()
    caught.__enter__()
    for module in ("transformers", "huggingface_hub", "torch"):
        warnings.filterwarnings("ignore", module=rf"{module}(\.|$)")  # the library, not a user module named like it

    def restore() -> None:
        caught.__exit__(None, None, None)
        hf_logging.set_verbosity(previous_level)
        if bars_were_enabled:
            hf_logging.enable_progress_bar()
        hub_logger.setLevel(previous_hub_level)

    return restore


@contextmanager
def reproducible_torch(seed: int) -> Iterator[None]:
    """Seed torch and use deterministic kernels inside; restore the caller's RNG states and mode outside.

    Deterministic kernels matter on CPU too: with two threads, two fits of MiniLM with
    the same seed drifted apart by ~1e-8 in the loss of the second epoch (some kernels
    reduce in a thread-dependent order); in deterministic mode they match bit for bit,
    at no measurable cost.

    torch's global RNG and its determinism flag belong to the process, so these scopes
    run one at a time (a re-entrant lock): fits, adapts and sampled generations in
    several threads each draw from their own seed, as they would alone, instead of
    interleaving their draws. Predictions that draw nothing (greedy and beam search,
    classifiers) do not enter it and run in parallel.
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with _SEEDED_LOCK, torch.random.fork_rng(devices=devices):
        deterministic = torch.are_deterministic_algorithms_enabled()
        warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


_SEEDED_LOCK = threading.RLock()


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity, where the OS reports one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def follow_thread_budget() -> None:
    """Make the tokenizers keep to torch's thread budget when it is a share of the cores.

    Workers of a search (Dask's nanny, Ray, joblib's loky) get their share of the cores
    through ``OMP_NUM_THREADS``, which torch follows; the Rust tokenizers would still
    encode on every core. Then, unless the user set ``TOKENIZERS_PARALLELISM``, this
    process's tokenizers run on one thread.
    """
    if torch.get_num_threads() < available_cores():
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def resolve_seed(random_state: int | None) -> int:
    """``random_state`` as an int; fresh OS entropy when None (numpy's global RNG is never read)."""
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1)[0])
    return int(random_state)


def autocast(device: torch.device):
    """bf16 autocast on CUDA devices that support it, a no-op elsewhere."""
    enabled = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def cpu_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``module`` whose tensors live on the CPU, without a device-side copy."""
    memo: dict[int, Any] = {}
    for tensor in list(module.parameters()) + list(module.buffers()):
        cpu = tensor.detach().to("cpu")
        memo[id(tensor)] = torch.nn.Parameter(cpu, tensor.requires_grad) if isinstance(tensor, torch.nn.Parameter) else cpu
    return copy.deepcopy(module, memo)


def copy_sharing_frozen(module: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``module`` whose frozen tensors (no grad) are shared, not copied.

    What trains is copied, so changes to the copy (new task rows, training) leave
    ``module`` as it was, at the cost of one copy of the trainable tensors only.
    """
    memo: dict[int, Any] = {}
    for tensor in list(module.parameters()) + list(module.buffers()):
        if not tensor.requires_grad:
            memo[id(tensor)] = tensor
    return copy.deepcopy(module, memo)


@contextmanager
def prediction_progress(verbose: int, total: int, name: str) -> Iterator[Any]:
    """A progress bar over ``total`` rows, and a closing line; nothing at ``verbose=0``.

    At ``verbose=2`` the bar shows at once; at ``verbose=1`` only once the prediction has
    run for ``PROGRESS_DELAY`` seconds, so that short calls print just their closing
    line. The caller calls ``update(n)`` on what it yields when ``n`` rows are done.
    """
    bar = None
    if verbose >= 1:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=name, unit="row", file=sys.stderr, delay=0 if verbose >= 2 else PROGRESS_DELAY)
    start = time.perf_counter()
    try:
        yield bar
    finally:
        if bar is not None:
            bar.close()
    if verbose >= 1:
        seconds = time.perf_counter() - start
        print(f"{name}: {total} rows in {seconds:.1f} s ({total / max(seconds, 1e-9):.1f} rows/s)")


PROGRESS_DELAY = 10.0  # seconds before verbose=1 shows a prediction's progress bar
