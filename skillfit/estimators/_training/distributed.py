"""Data-parallel fits over ``torch.distributed``: one process per device, each global batch split across them.

Two ways in, one training loop:

- **launched**: ``fit`` (or ``adapt``) with ``n_devices=k`` in a plain process starts
  ``k`` processes with ``torch.multiprocessing`` (spawn, so it works from a notebook),
  one per GPU with NCCL or CPU processes with gloo. Each rank runs the same call;
  rank 0 sends the fitted estimator back, the caller takes it over, and the processes
  are joined. An error in any rank ends every rank and is raised in the caller.
- **joined**: under ``torchrun`` or ``accelerate launch`` (an initialised process
  group, or ``WORLD_SIZE`` in the environment), ``fit`` trains in that group on every
  rank, whatever ``n_devices`` says.

:class:`DataParallelLoop` is the loop of both. Every rank draws the same batches from
the same seed and takes every ``world``-th row of each; after backward, one
``all_reduce`` sums the gradients of the batch's loss *sum*, the number of loss units
(examples, or target tokens) and which parameters were used, so the averaged gradient
is the full batch's, whatever each rank's share (the reduction DDP performs, in one
flat bucket: routed and gated layers leave some parameters unused on a rank, which
DDP handles only with ``find_unused_parameters``, and a parameter no rank used keeps
no gradient, as in one process). Gradient clipping, the optimizer (stepping the
global batch's task rows) and the schedule then run identically on every rank, so the
weights stay equal without further communication.
"""

from __future__ import annotations

import atexit
import copy
import os
import pickle
import signal
import socket
import sys
import tempfile
import time
import traceback
import warnings
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist

from ..._warnings import warn_user
from .._runtime import available_cores
from .loop import TrainingLoop, trainable_parameters

# How long a rank waits for the others in a collective before it fails (never a hang).
COLLECTIVE_TIMEOUT = timedelta(minutes=10)
# How long the caller waits for the ranks to finish after a Ctrl-C before ending them.
INTERRUPT_GRACE_SECONDS = 60.0
BACKENDS = ("auto", "gloo", "nccl")


# ------------------------------------------------------------------ where we are
def launched_by_runner() -> bool:
    """Whether this process is a rank of a group (torchrun, accelerate, ours): one initialised, or WORLD_SIZE > 1."""
    if not dist.is_available():
        return False
    if dist.is_initialized():
        return True
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of the current process group; ``(0, 1)`` outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """Rank 0 of a process group, or any process outside one: who prints and writes files."""
    return rank_and_world()[0] == 0


def rank_device(device: torch.device) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` for CUDA, else ``device`` unchanged."""
    if device.type != "cuda" or not launched_by_runner():
        return device
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank_and_world()[0])) % torch.cuda.device_count())


def choose_backend(requested: str, device: torch.device) -> str:
    """The process-group backend: NCCL for CUDA, gloo for the CPU; refuse NCCL on the CPU."""
    if requested == "nccl" and device.type != "cuda":
        raise ValueError(
            f"distributed_backend='nccl' needs CUDA devices, but this fit runs on {device}; "
            "use distributed_backend='gloo' (or 'auto') for CPU processes."
        )
    if requested != "auto":
        return requested
    return "nccl" if device.type == "cuda" else "gloo"


def join_runner_group(device: torch.device, requested_backend: str) -> None:
    """Under torchrun / accelerate (``WORLD_SIZE`` set), initialise the default group from the environment once."""
    backend = choose_backend(requested_backend, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if dist.is_initialized():
        if dist.get_backend() == "nccl" and device.type != "cuda":
            raise ValueError(
                f"The process group uses NCCL, but this fit runs on {device}; set device='cuda' "
                "or start the group with the gloo backend."
            )
        return
    dist.init_process_group(backend=backend, init_method="env://", timeout=COLLECTIVE_TIMEOUT)
    # The group is ours: end it before the interpreter does, or gloo's threads may abort at exit.
    atexit.register(_destroy_group)


def _destroy_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast_parameters(params: list[torch.nn.Parameter]) -> None:
    """Give every rank rank 0's values of ``params`` (as DDP does when it wraps a model)."""
    if not params:
        return
    with torch.no_grad():
        flat = torch.cat([param.detach().reshape(-1).float() for param in params])
        dist.broadcast(flat, src=0)
        for param, chunk in zip(params, flat.split([param.numel() for param in params])):
            param.copy_(chunk.view_as(param))


def check_ranks_agree(params: list[torch.nn.Parameter]) -> None:
    """Raise if the ranks' values of ``params`` differ (they take the same steps, so they never should)."""
    if not params:
        return
    with torch.no_grad():
        sums = torch.stack([param.detach().double().sum() for param in params])
        low, high = sums.clone(), sums.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if not torch.equal(low, high):
        raise RuntimeError(
            "The ranks of the data-parallel fit ended with different weights. Every rank must run the "
            "same fit on the same data (same X, y and random_state); please report this if they did."
        )


def broadcast_seed(seed: int) -> int:
    """Rank 0's seed on every rank (a ``random_state=None`` fit draws its seed once)."""
    return seed if rank_and_world()[1] == 1 else int(_from_rank_zero(seed))


# -------------------------------------------------------------------- the loop
class DataParallelLoop(TrainingLoop):
    """The training loop of one rank of a data-parallel fit (see the module docstring).

    Parameters
    ----------
    loss_units : callable
        ``batch -> number`` the batch loss averages over (examples or target tokens).
    **kwargs
        As for :class:`~.loop.TrainingLoop`.
    """

    def __init__(self, network: torch.nn.Module, *, loss_units: Callable[[dict], int], **kwargs: Any) -> None:
        super().__init__(network, **kwargs)
        self.loss_units = loss_units
        self.rank, self.world_size = rank_and_world()
        self.is_main_process = self.rank == 0
        self.callbacks.active = self.is_main_process  # callbacks run on rank 0; its decision to stop is broadcast
        score_validation = self.score_validation
        # Every rank scores the same weights; rank 0's result decides, so no rank can stop alone.
        self.score_validation = lambda validation: _from_rank_zero(score_validation(validation))

    def fit_loop(self, encoded: dict[str, Any], n_epochs: int, **kwargs: Any) -> list[float]:
        """As :meth:`TrainingLoop.fit_loop`, from rank 0's values; checks that the ranks end equal."""
        trainable = [param for param in self.network.parameters() if param.requires_grad]
        broadcast_parameters(trainable)
        losses = super().fit_loop(encoded, n_epochs, **kwargs)
        check_ranks_agree(trainable)
        return losses

    def _stop_requested(self) -> bool:
        """Rank 0's callbacks decide; with no user callback there is nothing to ask (and no broadcast)."""
        if not self.callbacks.has_user_callbacks:  # the loop's own never ask to stop
            return False
        return bool(_from_rank_zero(self.callbacks.stop_requested))

    def step_on_rows(self, micro_batches: list[np.ndarray], encoded: dict[str, Any], optimizer, scheduler) -> float:
        """One step on the global batches ``micro_batches``, of which this rank computes every ``world``-th row.

        Each rank backpropagates its rows' loss sums, batch after batch (gradient
        accumulation), and one ``all_reduce`` divides by the units of every rank's rows.
        """
        optimizer.zero_grad(set_to_none=True)
        local_sum = torch.zeros((), device=self.device)
        units = 0
        noise_seed = self.next_noise_seed()  # drawn on every rank, with rows or without
        for index, indices in enumerate(micro_batches):
            local_rows = indices[self.rank::self.world_size]
            if not len(local_rows):
                continue
            batch = self.make_batch(local_rows, encoded)
            batch_units = self.loss_units(batch)
            # Dropout masks differ between ranks, as between the rows of one batch; the global
            # generator is left as one process leaves it (nothing else is drawn in a step).
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed((noise_seed + self.rank + 1 + index * self.world_size) % 2**63)
                loss = self.backward(batch, noise_seed, scale=batch_units)  # the gradient of this rank's loss sum
            local_sum = local_sum + loss.detach().float() * batch_units
            units += batch_units
        total_units, loss_sum = self._all_reduce_gradients(trainable_parameters(optimizer), local_sum, units)
        rows = np.concatenate(micro_batches)
        self.update(optimizer, scheduler, torch.as_tensor(encoded["tasks"][rows]))  # the global batch's tasks
        return loss_sum / total_units

    def _all_reduce_gradients(
        self, trainable: list[torch.nn.Parameter], local_sum: torch.Tensor, units: int
    ) -> tuple[float, float]:
        """Sum gradients, loss sums, units and use flags over the ranks in one ``all_reduce``; set mean gradients."""
        device = self.device
        pieces = [
            param.grad.reshape(-1).float() if param.grad is not None else torch.zeros(param.numel(), device=device)
            for param in trainable
        ]
        used = torch.tensor([param.grad is not None for param in trainable], dtype=torch.float32, device=device)
        flat = torch.cat(pieces + [used, local_sum.reshape(1), torch.tensor([float(units)], device=device)])
        dist.all_reduce(flat)
        total_units, loss_sum = float(flat[-1]), float(flat[-2])
        used_anywhere = flat[-2 - len(trainable):-2] > 0
        sizes = [param.numel() for param in trainable]
        for param, chunk, was_used in zip(trainable, flat[:sum(sizes)].split(sizes), used_anywhere.tolist()):
            param.grad = (chunk / total_units).view_as(param).to(param.dtype) if was_used else None
        return total_units, loss_sum


def _from_rank_zero(value: Any) -> Any:
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


# ---------------------------------------------------------------- launching
def check_devices(n_devices: int, device: torch.device) -> None:
    """Refuse more processes than the GPUs present (CUDA) or the CPU cores (CPU)."""
    if device.type == "cuda":
        present = torch.cuda.device_count()
        if n_devices > present:
            raise ValueError(
                f"n_devices={n_devices} asks for {n_devices} GPUs, but {present} are visible "
                "(CUDA_VISIBLE_DEVICES); lower n_devices or run on a machine with more GPUs."
            )
        return
    if device.type != "cpu":
        raise ValueError(
            f"n_devices={n_devices} runs one process per CUDA GPU or CPU processes, not on {device.type!r}; "
            "use device='cuda' or device='cpu', or n_devices=1."
        )
    cores = available_cores()
    if n_devices > cores:
        raise ValueError(
            f"n_devices={n_devices} CPU processes on {cores} CPU core(s) would only compete for them; "
            f"use n_devices <= {cores} on the CPU."
        )


def free_port() -> int:
    """A TCP port free on this machine now, or ``MASTER_PORT`` if set and free."""
    requested = os.environ.get("MASTER_PORT")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", int(requested) if requested else 0))
        except OSError as error:
            raise ValueError(
                f"MASTER_PORT={requested} is already in use on this machine, so the processes of "
                "n_devices cannot meet there; unset MASTER_PORT to pick a free port, or choose another."
            ) from error
        return probe.getsockname()[1]


def run_data_parallel(estimator: Any, method: str, args: tuple, kwargs: dict, device: torch.device) -> Any:
    """Run ``estimator.<method>(*args, **kwargs)`` on ``n_devices`` new processes; return rank 0's estimator.

    Warnings of the rank whose result is kept are raised again here; an error in any
    rank is raised here (the first one, with its rank named); a Ctrl-C is passed to the
    ranks, which keep their last good weights as one process would.
    """
    n_devices = estimator.n_devices
    backend = choose_backend(estimator.distributed_backend, device)
    check_devices(n_devices, device)
    port = free_port()
    threads = max(1, torch.get_num_threads() // n_devices) if device.type == "cpu" else torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="skillfit-ddp-") as folder:
        workdir = Path(folder)
        with open(workdir / "job.pkl", "wb") as file:
            pickle.dump((on_cpu(estimator), method, args, kwargs), file)  # each rank moves it to its own device
        context = None
        interrupted = False
        try:
            with _main_module_importable():
                context = torch.multiprocessing.start_processes(
                    _rank_main, args=(n_devices, port, backend, device.type, threads, str(workdir)),
                    nprocs=n_devices, join=False, start_method="spawn",
                )
            try:
                _join(context)
            except KeyboardInterrupt:
                interrupted = True
                _interrupt(context)
            except Exception as error:
                _raise_rank_error(workdir, error)
        finally:
            _end_all(context)  # never leave ranks running: a second Ctrl-C, an error while starting
        results = sorted(workdir.glob("result-*.pkl"), key=lambda path: int(path.stem.split("-")[1]))
        if not results:
            if interrupted:
                raise KeyboardInterrupt
            _raise_rank_error(workdir, RuntimeError("no rank ended with a result"))
        with open(results[0], "rb") as file:
            fitted, caught = pickle.load(file)
    for message, category in caught:
        warn_user(message, category)
    return fitted


@contextmanager
def _main_module_importable() -> Iterator[None]:
    """Hide a ``__main__.__file__`` that is no file (``python -``, some REPLs) from spawn, which would run it."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    hide = path is not None and getattr(main, "__spec__", None) is None and not os.path.isfile(path)
    if hide:
        del main.__file__
    try:
        yield
    finally:
        if hide:
            main.__file__ = path


def on_cpu(estimator: Any) -> Any:
    """A shallow copy of ``estimator`` that pickles, and so unpickles, on the CPU (no GPU touched)."""
    if getattr(estimator, "device_", None) is None:
        return estimator
    moved = copy.copy(estimator)
    moved.device_ = torch.device("cpu")
    return moved


def _end_all(context) -> None:
    if context is None:
        return
    for process in context.processes:
        if process.is_alive():
            process.kill()
        process.join(timeout=10)


def _join(context) -> None:
    while not context.join(timeout=1.0):
        pass


def _interrupt(context) -> None:
    """Pass a Ctrl-C to every rank, wait for them to keep their weights, then end what is left."""
    for process in context.processes:
        if process.is_alive():
            os.kill(process.pid, signal.SIGINT)
    deadline = time.monotonic() + INTERRUPT_GRACE_SECONDS
    for process in context.processes:
        process.join(timeout=max(0.0, deadline - time.monotonic()))
    for process in context.processes:
        if process.is_alive():
            process.kill()


def _raise_rank_error(workdir: Path, error: Exception) -> None:
    """Raise the first error any rank recorded (ranks that failed later failed because of it).

    A rank that died without a Python error (killed, out of memory) recorded nothing;
    then the join's own error, which names it, is what the caller sees.
    """
    recorded = []
    for path in workdir.glob("error-*.pkl"):
        with open(path, "rb") as file:
            recorded.append(pickle.load(file))
    failed = getattr(error, "error_index", None)
    if failed is not None and failed not in {rank for _, rank, _, _ in recorded}:
        recorded = []
    if not recorded:
        raise RuntimeError(
            f"A process of the data-parallel fit ended without a Python error ({error}); its output above, "
            "or the system log (out of memory?), says why."
        ) from error
    when, rank, exception, text = min(recorded, key=lambda item: item[0])
    if exception is None:
        raise RuntimeError(f"Rank {rank} of the data-parallel fit failed:\n{text}") from error
    if hasattr(exception, "add_note"):
        exception.add_note(f"(raised in rank {rank} of the data-parallel fit; every rank was stopped)")
    raise exception from error


def _rank_main(
    rank: int, world_size: int, port: int, backend: str, device_type: str, threads: int, folder: str
) -> None:
    """The body of one launched rank: join the group, run the call, rank 0 writes the result."""
    workdir = Path(folder)
    _interrupt_once()
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_WORLD_SIZE": str(world_size)})
    if device_type == "cuda":
        torch.cuda.set_device(rank)
    else:
        torch.set_num_threads(threads)
    try:
        dist.init_process_group(backend=backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world_size, timeout=COLLECTIVE_TIMEOUT)
        with open(workdir / "job.pkl", "rb") as file:
            estimator, method, args, kwargs = pickle.load(file)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            getattr(estimator, method)(*args, **kwargs)
        # Every rank holds the same weights; each writes them, so that after a Ctrl-C that
        # stopped the ranks at different steps, the first rank to keep its weights is enough.
        kept = [(str(w.message), w.category) for w in caught]
        partial = workdir / f"result-{rank}.partial"
        with open(partial, "wb") as file:
            pickle.dump((on_cpu(estimator), kept), file)
        partial.rename(workdir / f"result-{rank}.pkl")
    except BaseException as error:
        _record_error(workdir, rank, error)
        # No group teardown: peers may sit in a collective, and NCCL's teardown could then block.
        sys.stderr.flush()
        os._exit(1)
    dist.destroy_process_group()


def _record_error(workdir: Path, rank: int, error: BaseException) -> None:
    text = "".join(traceback.format_exception(error))
    try:
        exception = pickle.loads(pickle.dumps(error))
    except Exception:
        exception = None
    with open(workdir / f"error-{rank}.pkl", "wb") as file:
        pickle.dump((time.time(), rank, exception, text), file)


def _interrupt_once() -> None:
    """The first Ctrl-C raises KeyboardInterrupt in a rank; later ones (the terminal's and the caller's) are ignored."""
    def handler(signum, frame):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
