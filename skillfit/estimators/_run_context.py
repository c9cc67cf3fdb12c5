"""What every training call needs around its loop: checkpoint files, seeds, processes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from ._base import SkillEstimatorBase

from .._warnings import warn_user
from ..backbones import resolve_device
from ._checkpoint import FitCheckpoints, data_digest, fingerprint, model_digest
from ._distributed import (
    broadcast_seed,
    join_runner_group,
    launched_by_runner,
    rank_and_world,
    rank_device,
    run_data_parallel,
)
from ._runtime import resolve_seed
from ._training import TrainingLoop


class RunContextMixin:
    """Checkpoint files and seeds of a call; data-parallel process launch and groups."""

    # ------------------------------------------------------------- checkpoints
    def _open_checkpoints(self, call: dict[str, Any], data: tuple, *, continues: bool) -> FitCheckpoints | None:
        """This call's checkpoint file in ``checkpoint_dir`` (None without one), read if it exists.

        ``call`` names the call and its arguments, ``data`` its inputs; ``continues``:
        the call continues the fitted model, which the fingerprint then includes (see
        ``_checkpoint.py``).
        """
        if self.checkpoint_dir is None:
            return None
        start = self._start_digest() if continues else None
        return FitCheckpoints(self.checkpoint_dir, fingerprint(self, call, data_digest(*data), start), self.checkpoint_every)

    def _warn_if_resumed(self, loop: TrainingLoop, action: str) -> None:
        """Say that this call resumed from a checkpoint rather than trained from the start."""
        if loop.resumed is None:
            return
        path, where = loop.resumed
        warn_user(
            f"{type(self).__name__}.{action} resumed from the checkpoint {path!r} ({where}). Delete the file "
            "to train from the start.",
            UserWarning,
        )

    def _fit_seed(self, checkpoints: FitCheckpoints | None) -> int:
        """The seed of this call: the checkpoint's when resuming, else ``random_state`` (None: rank 0's draw)."""
        seed = checkpoints.saved_seed if checkpoints is not None and checkpoints.found else None
        seed = broadcast_seed(resolve_seed(self.random_state) if seed is None else seed)
        if checkpoints is not None:
            checkpoints.seed = seed
        return seed

    def _start_digest(self) -> str:
        """A fingerprint of the fitted model a warm fit or ``adapt`` continues."""
        return model_digest(self.network_, self.tasks_, getattr(self, "classes_", None))


    # ---------------------------------------------------------- several processes
    def _starts_processes(self) -> bool:
        """Whether this call starts ``n_devices`` processes (not when already one rank of a group)."""
        return self.n_devices > 1 and not launched_by_runner()

    def _run_on_new_processes(
        self, estimator: "SkillEstimatorBase", method: str, args: tuple, device: torch.device, **kwargs: Any
    ) -> "SkillEstimatorBase":
        """Run ``estimator.<method>(*args, **kwargs)`` on new processes; take rank 0's result, on ``device``."""
        fitted = run_data_parallel(estimator, method, args, kwargs, device)
        fitted.network_.to(device)
        fitted.device_ = device
        self.__dict__.clear()
        self.__dict__.update(fitted.__dict__)
        return self

    def _continuing_device(self) -> torch.device:
        """Where a call that continues a fitted model (adapt, a warm fit) trains: this rank's device in a group."""
        if rank_and_world()[1] > 1:
            return rank_device(resolve_device(self.device))
        return self.device_

    def _join_process_group(self) -> None:
        """Under torchrun / accelerate launch (or our own ranks), make sure this rank is in the group."""
        if launched_by_runner():
            join_runner_group(rank_device(resolve_device(self.device)), self.distributed_backend)
