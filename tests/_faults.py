"""Estimators that fail on purpose inside a data-parallel fit (importable by spawned ranks)."""

from __future__ import annotations

import os

import torch.distributed as dist

from skillfit import PolyClassifier


class FailsOnRankOne(PolyClassifier):
    """Raises a ValueError in rank 1's third training step; the other ranks would wait for it."""

    def _batch_loss(self, batch):
        self._steps = getattr(self, "_steps", 0) + 1
        if dist.is_initialized() and dist.get_rank() == 1 and self._steps == 3:
            raise ValueError("injected failure in rank 1")
        return super()._batch_loss(batch)


class InterruptedInSecondEpoch(PolyClassifier):
    """A Ctrl-C on every rank at the first step of the second epoch."""

    def _batch_loss(self, batch):
        if len(self.history_) == 1:
            raise KeyboardInterrupt
        return super()._batch_loss(batch)


class PreemptedAtStep(PolyClassifier):
    """Raises (a preemption, on every rank) before the training step ``SKILLFIT_TEST_PREEMPT_AT`` when it is set."""

    def _batch_loss(self, batch):
        self._steps = getattr(self, "_steps", 0) + 1
        if self._steps == int(os.environ.get("SKILLFIT_TEST_PREEMPT_AT", "0")):
            raise RuntimeError("preempted")
        return super()._batch_loss(batch)


class StopsAtStep:
    """A callback that stops the training after its ``step``-th step (on rank 0, where callbacks run)."""

    def __init__(self, step: int) -> None:
        self.step, self.ranks = step, []

    def on_batch_end(self, state) -> None:
        self.ranks.append(dist.get_rank() if dist.is_initialized() else 0)
        if state.global_step >= self.step:
            state.stop_training = True
