"""What a training loop holds between steps: its position, snapshots of weights, early stopping.

:class:`LoopPosition` is where a loop stands (what a checkpoint records and a resumed
loop starts from); :class:`WeightSnapshot` copies parameter values to put back later
(the best epoch, an interrupt); :class:`EarlyStopping` tracks the best validation score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch


class WeightSnapshot:
    """A copy of some parameters' values, to put back later (best epoch, interrupts)."""

    def __init__(self, params: list[torch.nn.Parameter], description: str) -> None:
        self.description = description
        self._pairs = [(param, param.detach().clone()) for param in params]

    @classmethod
    def of(cls, params: list[torch.nn.Parameter], values: list[torch.Tensor], description: str) -> "WeightSnapshot":
        """A snapshot holding given ``values`` of ``params`` (one read back from a checkpoint)."""
        snapshot = cls([], description)
        snapshot._pairs = [(param, value.to(param.device, param.dtype)) for param, value in zip(params, values)]
        return snapshot

    def values(self) -> list[torch.Tensor]:
        """The copied values, in the order of the parameters."""
        return [value for _, value in self._pairs]

    def restore(self) -> None:
        """Write the copied values back into the parameters."""
        with torch.no_grad():
            for param, value in self._pairs:
                param.copy_(value)


@dataclass
class LoopPosition:
    """Where a loop of a fit stands: what a checkpoint records and a resumed loop starts from.

    ``loop`` counts the :meth:`TrainingLoop.fit_loop` calls of one fit (PEMT's stage 2 is
    loop 1); ``epoch`` the complete epochs of that loop; ``step`` the steps done in the
    epoch in progress, whose running loss is ``loss_sum / loss_count`` and whose batches
    were drawn from the numpy RNG state ``epoch_rng``. ``complete``: the loop has ended.
    """

    loop: int = 0
    epoch: int = 0
    step: int = 0
    loss_sum: float = 0.0
    loss_count: int = 0
    epoch_rng: dict | None = None
    complete: bool = False

    def start_epoch(self, rng_state: dict) -> None:
        """Begin the next epoch, whose batches are drawn from ``rng_state``."""
        self.step, self.loss_sum, self.loss_count, self.epoch_rng = 0, 0.0, 0, rng_state


class EarlyStopping:
    """The validation scores of one loop (higher is better): the best epoch and when to stop.

    An epoch counts as an improvement when it beats the best score by at least ``tol``;
    training stops after ``n_iter_no_change`` epochs without one.
    """

    def __init__(self, n_iter_no_change: int, tol: float) -> None:
        self.n_iter_no_change, self.tol = n_iter_no_change, tol
        self.best_score: float | None = None
        self.best_task_scores: dict | None = None
        self.best_weights: WeightSnapshot | None = None
        self.last_task_scores: dict | None = None
        self.epochs_without_improvement = 0

    def update(self, score: float, task_scores: dict, snapshot: Callable[[], WeightSnapshot]) -> None:
        """Record an epoch's scores; ``snapshot()`` is called when the epoch is the best so far."""
        first = self.best_score is None
        if first or score < self.best_score + self.tol:
            self.epochs_without_improvement = 0 if first else self.epochs_without_improvement + 1
        else:
            self.epochs_without_improvement = 0
        if first or score > self.best_score:
            self.best_score, self.best_task_scores, self.best_weights = score, task_scores, snapshot()
        self.last_task_scores = task_scores

    @property
    def should_stop(self) -> bool:
        """Whether ``n_iter_no_change`` epochs in a row brought no improvement."""
        return self.epochs_without_improvement >= self.n_iter_no_change


def snapshot_state(snapshot: WeightSnapshot | None) -> dict[str, Any] | None:
    return None if snapshot is None else {"description": snapshot.description, "values": snapshot.values()}


def snapshot_from_state(params: list[torch.nn.Parameter], state: dict[str, Any] | None) -> WeightSnapshot | None:
    return None if state is None else WeightSnapshot.of(params, state["values"], state["description"])


def describe_position(position: LoopPosition, n_epochs: int) -> str:
    """Where a resumed loop stands, in words."""
    if position.complete:
        return "this training had ended; its final weights are kept"
    within = f", step {position.step} of epoch {position.epoch + 1}" if position.step else ""
    return f"{position.epoch} of {n_epochs} epochs done{within}"
