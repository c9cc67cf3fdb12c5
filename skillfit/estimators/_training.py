"""The training loop: ``fit_loop`` -> ``run_epoch`` -> ``train_step``, as in skorch.

:class:`TrainingLoop` trains whatever parameters of a network require grad. It knows
nothing of scikit-learn or of the methods: the estimator hands it four callables
(make a batch, the batch's loss, validation scores, whether a parameter is a router's)
and its settings. Around the chain stand small helpers with one job each:

- :func:`~._optimizer.make_optimizer`: AdamW with the routers in their own group and
  lazy steps on per-task rows, linear warm-up then linear decay;
- :class:`WeightSnapshot`: values of some parameters, to put back later;
- :class:`EarlyStopping`: the best validation score, its snapshot, and when to stop;
- :func:`interruptible`: the one place Ctrl-C is handled.

Data-parallel training (``_distributed.DataParallelLoop``) plugs in by subclassing the
loop (its step, its validation, who prints), never by touching an estimator or a method
class.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..callbacks import CallbackList, learning_rates
from ._batching import token_lengths, training_batches
from ._optimizer import make_optimizer
from ._progress import ProgressPrinter
from ._runtime import autocast

# Global gradient-norm clip; fixed, as in most LoRA recipes.
MAX_GRAD_NORM = 1.0
# Trainable parameters whose name ends so take router_learning_rate and no weight decay.
ROUTER_PARAMETER_SUFFIXES = ("routing_logits", "exclusive_logits")

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class TrainingSettings:
    """The estimator parameters the loop reads (same names, same meaning)."""

    learning_rate: float
    router_learning_rate: float
    weight_decay: float
    warmup_fraction: float
    batch_size: int
    group_by_length: bool
    early_stopping: bool
    n_iter_no_change: int
    tol: float
    verbose: int

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "TrainingSettings":
        """Pick the settings out of an estimator's ``get_params()``."""
        return cls(**{field.name: params[field.name] for field in fields(cls)})


def trainable_parameters(optimizer) -> list[torch.nn.Parameter]:
    """Every parameter an optimizer steps, group after group."""
    return [param for group in optimizer.param_groups for param in group["params"]]


def is_router_parameter(name: str) -> bool:
    """Whether a trainable parameter is a routing logit (own learning rate, no decay)."""
    return name.endswith(ROUTER_PARAMETER_SUFFIXES)


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


class TrainingLoop:
    """Trains a network's parameters that require grad, epoch by epoch, into ``history``.

    Parameters
    ----------
    network : nn.Module
        A skilled network with a ``context`` (:class:`~skillfit.skills.TaskContext`).
    settings : TrainingSettings
        Learning rates, batch size, early stopping, verbosity.
    make_batch : callable
        ``(row indices, encoded) -> batch`` of tensors, with a CPU ``"tasks"`` tensor.
    batch_loss : callable
        ``batch -> scalar loss`` (the objective, with any regulariser).
    score_validation : callable
        ``validation -> (score, {task: score})``, higher is better.
    rng : numpy Generator
        Shuffles the batches.
    history : list of dict
        Receives one record per epoch (the estimator's ``history_``).
    name : str
        Shown in printed lines (the estimator's class name).
    is_router : callable
        Which trainable parameters take the router learning rate (e.g. :func:`is_router_parameter`).
    checkpoints : FitCheckpoints, optional
        Where the loop writes its state at epoch ends (and every ``checkpoint_every``
        steps) and from which it resumes (see ``_checkpoint.py``).
    callbacks : CallbackList, optional
        The call's callbacks (:mod:`skillfit.callbacks`), told of epochs and steps;
        they may stop the training.

    Attributes
    ----------
    kept : WeightSnapshot or None
        The weights an interrupt puts back: the best epoch with validation data, else
        the last complete epoch (or the start of the loop).
    losses : list of float
        Mean loss of each complete epoch of the latest :meth:`fit_loop`.
    best_score, kept_task_scores : float, dict or None
        Validation summary of the latest loop that had validation data.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        *,
        settings: TrainingSettings,
        make_batch: Callable[[np.ndarray, dict[str, Any]], Batch],
        batch_loss: Callable[[Batch], torch.Tensor],
        score_validation: Callable[[dict[str, Any]], tuple[float, dict]],
        rng: np.random.Generator,
        history: list[dict[str, Any]],
        name: str,
        is_router: Callable[[str], bool],
        checkpoints: Any = None,
        callbacks: CallbackList | None = None,
    ) -> None:
        self.network, self.settings, self.rng, self.history, self.name = network, settings, rng, history, name
        self.make_batch, self.batch_loss, self.score_validation, self.is_router = make_batch, batch_loss, score_validation, is_router
        self.device = next(network.parameters()).device
        self.kept: WeightSnapshot | None = None
        self.stopping: EarlyStopping | None = None
        self.losses: list[float] = []
        self.stage = ""
        self.best_score: float | None = None
        self.kept_task_scores: dict | None = None
        self.is_main_process = True  # prints and draws progress bars (rank 0 of a data-parallel fit)
        # Routing noise of step i is seeded from (this, i): the same in one process and on every rank.
        self.noise_seed, self.steps_taken = torch.initial_seed(), 0
        self.checkpoints, self.loops_begun = checkpoints, 0
        self.resumed: tuple[str, str] | None = None  # (checkpoint file, where its loop stood) once resumed
        self.trainable: list[torch.nn.Parameter] = []  # what the running loop's optimizer steps
        self.callbacks = callbacks if callbacks is not None else CallbackList([], None, "fit", history)
        self.callbacks.callbacks.insert(0, ProgressPrinter(self))
        self._router_groups: list[bool] = []

    def make_optimizer(self, n_steps: int, weight_decay: float | None = None):
        """The optimizer and scheduler of a loop of ``n_steps`` steps (see :func:`make_optimizer`)."""
        return make_optimizer(self.network, self.settings, n_steps, is_router=self.is_router, weight_decay=weight_decay)

    # ------------------------------------------------------------------ the chain
    def fit_loop(
        self, encoded: dict[str, Any], n_epochs: int, *, stage: str = "", weight_decay: float | None = None,
        validation: dict[str, Any] | None = None,
    ) -> list[float]:
        """Train for ``n_epochs`` (fewer with early stopping); return each epoch's mean loss.

        With validation data, scores it after each epoch; with ``early_stopping``, stops
        after ``n_iter_no_change`` epochs without improvement and restores the best epoch.
        With :attr:`checkpoints`, resumes from a checkpoint of this loop, or skips the
        loop when the checkpoint is of a later one (its weights come with it).
        """
        self.losses, self.stage = [], stage
        position = LoopPosition(loop=self.loops_begun)
        self.loops_begun += 1
        saved = self.checkpoints.saved_loop(position.loop) if self.checkpoints is not None else None
        if saved is not None and saved.of_later_loop:
            return self.losses
        n_batches = -(-len(encoded["input_ids"]) // self.settings.batch_size)
        optimizer, scheduler = self.make_optimizer(n_epochs * n_batches, weight_decay)
        self.trainable = trainable = trainable_parameters(optimizer)
        self.kept = WeightSnapshot(trainable, f"the start of {stage}" if stage else "before training")
        self.stopping = EarlyStopping(self.settings.n_iter_no_change, self.settings.tol) if validation is not None else None
        if saved is not None:
            position = saved.restore(self, optimizer, scheduler)
            where = (f"{self.stage}: " if self.stage else "") + _describe(position, n_epochs)
            self.resumed = (str(saved.path), where)
            self._say(f"resumed from {saved.path}: {where}")
        routers = {id(param) for name, param in self.network.named_parameters() if self.is_router(name)}
        self._router_groups = [any(id(param) in routers for param in group["params"]) for group in optimizer.param_groups]
        self.callbacks.update(stage=stage, epoch=position.epoch, n_epochs=n_epochs, n_steps=n_batches,
                              resumed_from=None if saved is None else str(saved.path),
                              learning_rates=learning_rates(optimizer, self._router_groups))
        self.callbacks.begin_fit()
        try:
            if not position.complete:
                self.run_epochs(encoded, n_epochs, position, optimizer, scheduler, validation)
        finally:
            # Free gradients and Adam's moments now rather than at the next garbage collection.
            optimizer.zero_grad(set_to_none=True)
            optimizer.state.clear()
        if not position.complete:
            self._keep_final_weights()
            position.complete = True
            if self.checkpoints is not None:
                self.checkpoints.save(self, position)  # the final weights: a later fit returns them at once
        self.kept = None  # an interrupt between loops (PEMT's stages) finds no loop to restore
        return self.losses

    def run_epochs(
        self, encoded: dict[str, Any], n_epochs: int, position: LoopPosition, optimizer, scheduler,
        validation: dict[str, Any] | None,
    ) -> None:
        """The epochs from ``position`` on, each ended by :meth:`end_epoch` and a checkpoint."""
        if self._stops_early() or self._stop_requested():  # a checkpoint written at the epoch that stopped
            return
        for epoch in range(position.epoch, n_epochs):
            start = time.perf_counter()
            if position.step == 0:
                position.start_epoch(self.rng.bit_generator.state)
            batches = self.training_batches(encoded)
            self.callbacks.emit("on_epoch_begin", epoch=epoch + 1, step=position.step, n_steps=len(batches),
                                loss=None, validation_score=None, task_scores=None, record=None)
            loss = self.run_epoch(batches, encoded, optimizer, scheduler, f"epoch {epoch + 1}/{n_epochs}", position)
            position.epoch, position.step = epoch + 1, 0
            self.end_epoch(epoch, n_epochs, loss, self.trainable, validation, start)
            if self.checkpoints is not None:
                self.checkpoints.save(self, position, optimizer, scheduler)
            if self._stops_early() or self._stop_requested():
                return

    def _stop_requested(self) -> bool:
        """Whether a callback asked to stop (:attr:`~skillfit.callbacks.TrainingState.stop_training`)."""
        return self.callbacks.stop_requested

    def _stops_early(self) -> bool:
        """Whether early stopping ends the loop now (``n_iter_no_change`` epochs without improvement); says so."""
        stopping = self.stopping
        if not (self.settings.early_stopping and stopping is not None and stopping.should_stop):
            return False
        self._say(f"early stop: no improvement for {stopping.epochs_without_improvement} epochs; "
                  f"keeping {stopping.best_weights.description}")
        return True

    def training_batches(self, encoded: dict[str, Any]) -> list[np.ndarray]:
        """One epoch's batches of row indices (see :func:`~._batching.training_batches`)."""
        lengths = token_lengths(encoded) if self.settings.group_by_length else None
        return training_batches(encoded["tasks"], self.settings.batch_size, self.rng, lengths=lengths)

    def run_epoch(
        self, batches: list[np.ndarray], encoded: dict[str, Any], optimizer, scheduler, description: str,
        position: LoopPosition | None = None,
    ) -> float:
        """One pass over ``batches`` from ``position.step`` on; returns the mean loss per example."""
        position = position if position is not None else LoopPosition()
        self.network.train()
        for step in range(position.step, len(batches)):
            indices = batches[step]
            loss = self.step_on_rows(indices, encoded, optimizer, scheduler)
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"{self.name}: the training loss became {loss} in {description}"
                    f"{' of ' + self.stage if self.stage else ''}, step {step + 1}; training stopped and the "
                    f"estimator keeps its state from before. Lower learning_rate (now {self.settings.learning_rate}) "
                    f"or router_learning_rate (now {self.settings.router_learning_rate}), or check the data."
                )
            position.loss_sum += loss * len(indices)
            position.loss_count += len(indices)
            position.step = step + 1
            self.callbacks.emit("on_batch_end", step=step + 1, global_step=self.callbacks.state.global_step + 1,
                                loss=loss, epoch_loss=position.loss_sum / position.loss_count,
                                learning_rates=learning_rates(optimizer, self._router_groups))
            stop = self._stop_requested()
            if self.checkpoints is not None and step + 1 < len(batches) and not stop \
                    and self.checkpoints.step_due(self.steps_taken):
                self.checkpoints.save(self, position, optimizer, scheduler)
            if stop:
                break
        return position.loss_sum / position.loss_count

    def step_on_rows(self, indices: np.ndarray, encoded: dict[str, Any], optimizer, scheduler) -> float:
        """One optimisation step on the rows ``indices`` of ``encoded``; returns the batch's mean loss."""
        return self.train_step(self.make_batch(indices, encoded), optimizer, scheduler)

    def train_step(self, batch: Batch, optimizer, scheduler) -> float:
        """One optimisation step on ``batch``; returns its loss."""
        optimizer.zero_grad(set_to_none=True)
        loss = self.backward(batch, self.next_noise_seed())
        self.update(optimizer, scheduler, batch["tasks"])
        return float(loss.detach())

    def backward(self, batch: Batch, noise_seed: int, scale: float = 1.0) -> torch.Tensor:
        """Back-propagate ``scale`` times the batch's loss; return the loss."""
        # The task ids stay set through backward: with gradient checkpointing, skill layers run again there.
        with self.network.context.tasks(batch["tasks"], noise_seed=noise_seed):
            with autocast(self.device):
                loss = self.batch_loss(batch)
            (loss * scale).backward()
        return loss

    def update(self, optimizer, scheduler, tasks: torch.Tensor) -> None:
        """Clip the gradients and step the optimizer (on the rows of ``tasks`` of per-task tables) and schedule."""
        torch.nn.utils.clip_grad_norm_(trainable_parameters(optimizer), MAX_GRAD_NORM)
        optimizer.set_active_tasks(tasks)  # per-task tables step on these tasks' rows only
        optimizer.step()
        scheduler.step()

    def next_noise_seed(self) -> int:
        """The seed of the next step's training noise (see :meth:`~skillfit.skills.TaskContext.uniform_noise`)."""
        state = np.random.SeedSequence([self.noise_seed, self.steps_taken]).generate_state(1, np.uint64)[0]
        self.steps_taken += 1
        return int(state >> np.uint64(1))

    # ------------------------------------------------------------- epoch ends
    def end_epoch(
        self, epoch: int, n_epochs: int, loss: float, trainable: list[torch.nn.Parameter],
        validation: dict[str, Any] | None, start: float,
    ) -> None:
        """Score the validation data, take the epoch's snapshot, record and print the epoch."""
        name = f"epoch {epoch + 1}" + (f" of {self.stage}" if self.stage else "")
        record: dict[str, Any] = {"epoch": epoch + 1, "loss": loss}
        if self.stage:
            record["stage"] = self.stage
        if validation is not None:
            score, task_scores = self.score_validation(validation)
            record["validation_score"] = score
            self.stopping.update(score, task_scores, lambda: WeightSnapshot(trainable, name))
            self.kept = self.stopping.best_weights
        else:
            self.kept = WeightSnapshot(trainable, name)
        record["time"] = time.perf_counter() - start
        self.history.append(record)
        self.losses.append(loss)
        self.callbacks.emit("on_epoch_end", loss=loss, epoch_loss=loss, record=record,
                            validation_score=record.get("validation_score"),
                            task_scores=self.stopping.last_task_scores if validation is not None else None)

    def _keep_final_weights(self) -> None:
        """After the last epoch: the best epoch's weights with early stopping, else the last epoch's."""
        stopping = self.stopping
        if stopping is None or stopping.best_score is None:
            return
        if self.settings.early_stopping:
            stopping.best_weights.restore()
            self.best_score, self.kept_task_scores = stopping.best_score, stopping.best_task_scores
        else:
            self.best_score, self.kept_task_scores = stopping.best_score, stopping.last_task_scores

    def restore_kept(self) -> str:
        """Put back :attr:`kept` (after an interrupt) and return what it holds, e.g. ``"epoch 3"``."""
        self.kept.restore()
        if self.stopping is not None and self.stopping.best_score is not None:
            self.best_score, self.kept_task_scores = self.stopping.best_score, self.stopping.best_task_scores
        return self.kept.description

    def _say(self, message: str) -> None:
        """Print a line tagged with the estimator and stage, at ``verbose >= 1``."""
        if self.settings.verbose >= 1 and self.is_main_process:
            print(f"[{self.name}{' ' + self.stage if self.stage else ''}] {message}", flush=True)


def _describe(position: LoopPosition, n_epochs: int) -> str:
    """Where a resumed loop stands, in words."""
    if position.complete:
        return "this training had ended; its final weights are kept"
    within = f", step {position.step} of epoch {position.epoch + 1}" if position.step else ""
    return f"{position.epoch} of {n_epochs} epochs done{within}"


@contextmanager
def interruptible(
    loop: TrainingLoop, action: str, *, needs_an_epoch: bool, kept_note: str = "", stacklevel: int = 4,
    resumable_from: str | None = None,
) -> Iterator[None]:
    """The one place Ctrl-C is handled: put back the loop's last good weights, then warn.

    Parameters
    ----------
    loop : TrainingLoop
        The loop whose :attr:`~TrainingLoop.kept` weights are put back.
    action : str
        What was interrupted, e.g. ``"CPolyClassifier.fit"``.
    needs_an_epoch : bool
        Re-raise the KeyboardInterrupt when no epoch completed (``fit`` then leaves
        the estimator as it was before).
    kept_note : str
        Appended to the warning, e.g. that the fitted tasks are unchanged.
    stacklevel : int, default=4
        Of the warning: 4 is the caller of the function that entered this scope.
    resumable_from : str, optional
        A checkpoint file that holds the progress of a call that continues a fitted
        model (a warm fit, ``adapt``): the interrupt is then raised again with a note
        naming it, and the caller puts the estimator back as it was, so that the same
        call, made again, resumes from the checkpoint.

    A Ctrl-C outside a running loop (before the first, between PEMT's stages) finds no
    weights to keep and is re-raised.
    """
    try:
        yield
    except KeyboardInterrupt as interrupt:
        if resumable_from is not None and os.path.exists(resumable_from):
            interrupt.add_note(
                f"{action} was interrupted; the estimator is as it was before the call, and the checkpoint "
                f"{resumable_from!r} keeps the progress: the same call resumes from it."
            )
            raise
        if loop.kept is None:
            raise
        kept = loop.restore_kept()
        if needs_an_epoch and not loop.history:
            raise
        epochs = f" after {len(loop.history)} epoch(s)" if needs_an_epoch else ""
        warnings.warn(
            f"{action} was interrupted{epochs}; it keeps the weights of {kept}{kept_note}",
            UserWarning,
            stacklevel=stacklevel,
        )
