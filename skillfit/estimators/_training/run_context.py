"""One training call's surroundings: :class:`TrainingRun`, and the launch of data-parallel processes.

``fit`` (new or warm), ``partial_fit`` and ``adapt`` each open one :class:`TrainingRun`;
PEMT's two stages are two loops inside its ``fit``'s run. What a call needs around its
loop is written here once: rollback, seed, process group, checkpoint file, interrupts and
the resume warning.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import torch

if TYPE_CHECKING:
    from .._base import SkillEstimatorBase

from ..._warnings import warn_user
from ...backbones import resolve_device
from .checkpoint import FitCheckpoints, data_digest, fingerprint, model_digest
from .distributed import (
    broadcast_seed,
    join_runner_group,
    launched_by_runner,
    rank_and_world,
    rank_device,
    run_data_parallel,
)
from .interrupts import interruptible
from .._runtime import copy_sharing_frozen, follow_thread_budget, quiet_libraries, reproducible_torch, resolve_seed
from .loop import TrainingLoop


class TrainingRun:
    """One training call of an estimator, used as ``with TrainingRun(estimator, "fit") as run:``.

    It owns, in the order a call meets them:

    - **rollback**: entering records the estimator's attributes; an exception leaving
      the block (an error, or a Ctrl-C that kept nothing) puts them back, so a call is
      all or nothing;
    - the **process group** (under ``torchrun``), the **thread budget**, the call's
      **checkpoint file** and its **seed** (:meth:`start`);
    - the quiet, seeded scope of the training (:meth:`seeded`), the copy that a call
      continuing a fitted model trains (:meth:`continue_fitted_model`);
    - the **loop** and **Ctrl-C** (:meth:`training_loop`, :meth:`interruptible`);
    - once the block succeeds: the **resume warning** and the callbacks' ``on_fit_end``.
    """

    def __init__(self, estimator: "SkillEstimatorBase", call: str) -> None:
        self.estimator, self.call = estimator, call
        self.action = f"{type(estimator).__name__}.{call}"
        self.checkpoints: FitCheckpoints | None = None
        self.seed: int | None = None
        self.loop: TrainingLoop | None = None
        self._previous: dict[str, Any] = {}

    def __enter__(self) -> "TrainingRun":
        self._previous = dict(self.estimator.__dict__)
        return self

    def __exit__(self, exc_type, exc, traceback) -> bool:
        if exc_type is None:
            try:
                self._succeed()
            except BaseException:
                self._roll_back()
                raise
        else:
            self._roll_back()
        return False

    def _roll_back(self) -> None:
        """Put back the estimator's attributes as they were when the call began."""
        self.estimator.__dict__.clear()
        self.estimator.__dict__.update(self._previous)

    def _succeed(self) -> None:
        """Say that the call resumed from a checkpoint (if it did), then tell the callbacks the call ended."""
        loop = self.loop
        if loop is None:
            return
        if loop.resumed is not None:
            path, where = loop.resumed
            warn_user(f"{self.action} resumed from the checkpoint {path!r} ({where}). Delete the file to train "
                      "from the start.", UserWarning)
        loop.callbacks.emit("on_fit_end")

    # ----------------------------------------------------------------- set-up
    def start(
        self, arguments: dict[str, Any] | None = None, data: tuple = (), *, continues: bool = False,
        seed: int | None = None,
    ) -> int:
        """Join the process group, follow the thread budget, open the checkpoint file, and return the seed.

        ``arguments`` (None: no checkpoints) name the call's arguments and ``data`` its
        inputs, which the checkpoint's fingerprint includes, with the fitted model when
        the call ``continues`` it. The seed is ``seed`` if given (``partial_fit``'s
        sequence keeps one), else the checkpoint's when resuming, else ``random_state``
        (None: rank 0's draw, shared with every rank).
        """
        estimator = self.estimator
        follow_thread_budget()
        if launched_by_runner():  # torchrun / accelerate launch (or our own ranks): this rank joins the group
            join_runner_group(rank_device(resolve_device(estimator.device)), estimator.distributed_backend)
        if arguments is not None and estimator.checkpoint_dir is not None:
            start = model_digest(estimator.network_, estimator.tasks_, getattr(estimator, "classes_", None)) \
                if continues else None
            self.checkpoints = FitCheckpoints(
                estimator.checkpoint_dir, fingerprint(estimator, {"call": self.call, **arguments}, data_digest(*data), start),
                estimator.checkpoint_every,
            )
        if seed is None:
            seed = self.checkpoints.saved_seed if self.checkpoints is not None else None
            seed = broadcast_seed(resolve_seed(estimator.random_state) if seed is None else seed)
        if self.checkpoints is not None:
            self.checkpoints.seed = seed
        self.seed = seed
        return seed

    @contextmanager
    def seeded(self) -> Iterator[None]:
        """The scope of the training: libraries quiet below ``verbose=2``, torch seeded with the call's seed."""
        with quiet_libraries(self.estimator.verbose), reproducible_torch(self.seed):
            yield

    def continue_fitted_model(self) -> None:
        """Train a copy of the fitted network (sharing the frozen backbone) on this rank's device.

        An error then leaves the fitted model as it was; ``history_`` is copied too, as
        the loop appends to it.
        """
        estimator = self.estimator
        if rank_and_world()[1] > 1:
            estimator.device_ = rank_device(resolve_device(estimator.device))
        estimator.network_ = copy_sharing_frozen(estimator.network_).to(estimator.device_)
        estimator.history_ = list(estimator.__dict__.get("history_", []))

    # ------------------------------------------------------------- the loop
    def training_loop(self, rng: np.random.Generator | None = None) -> TrainingLoop:
        """The estimator's loop for this call (shuffled by ``rng``, default: one seeded by the call's seed)."""
        if self.checkpoints is not None:
            self.checkpoints.check_backbone(self.estimator._backbone_reference.get("sha256"))
        rng = np.random.default_rng(self.seed) if rng is None else rng
        self.loop = self.estimator._training_loop(rng, self.checkpoints, call=self.call)
        return self.loop

    def interruptible(self, *, needs_an_epoch: bool, kept_note: str, resumable: bool):
        """Ctrl-C inside the block keeps the loop's last good weights (see :func:`~.interrupts.interruptible`).

        ``resumable``: a call that continues a fitted model re-raises instead when its
        checkpoint file holds the progress, and the rollback puts the estimator back.
        """
        resumable_from = str(self.checkpoints.path) if resumable and self.checkpoints is not None else None
        return interruptible(self.loop, self.action, needs_an_epoch=needs_an_epoch, kept_note=kept_note,
                             resumable_from=resumable_from)


class ProcessLaunchMixin:
    """Data-parallel calls: whether a call starts ``n_devices`` processes, and taking over rank 0's result."""

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
