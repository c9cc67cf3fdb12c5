"""The training loop: ``fit_loop`` -> ``run_epoch`` -> ``train_step``, as in skorch.

:class:`TrainingLoop` trains whatever parameters of a network require grad. It knows
nothing of scikit-learn or of the methods: the estimator hands it four callables
(make a batch, the batch's loss, validation scores, whether a parameter is a router's)
and its settings. Around the chain stand small helpers with one job each:

- :func:`~.optimizer.make_optimizer`: AdamW with the routers in their own group and
  lazy steps on per-task rows, linear warm-up then linear decay;
- ``loop_state.py``: where a loop stands, weight snapshots, early stopping;
- ``progress.py``: what it prints (a callback); ``interrupts.py``: Ctrl-C.

:meth:`TrainingLoop.state_dict` / :meth:`~TrainingLoop.load_state_dict` hold and put
back its whole state; checkpoints store exactly that.

Data-parallel training (``_distributed.DataParallelLoop``) plugs in by subclassing the
loop (its step, its validation, who prints), never by touching an estimator or a method
class.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields
from typing import Any, Callable

import numpy as np
import torch

from ...callbacks import CallbackList, learning_rates
from .._batching import token_lengths, training_batches
from .loop_callbacks import CheckpointWriter, HistoryRecorder, WeightKeeper
from .loop_state import EarlyStopping, LoopPosition, WeightSnapshot, describe_position, snapshot_from_state, snapshot_state
from .optimizer import make_optimizer
from .._persistence.folder_format import adapter_state
from .progress import ProgressPrinter
from .._runtime import autocast

# Optimizer settings that choose an implementation, not a result: a loaded state keeps the running loop's.
IMPLEMENTATION_FLAGS = ("fused", "foreach", "capturable", "differentiable")
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
    lr_schedule: str
    gradient_accumulation_steps: int
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
        steps) and from which it resumes (see ``checkpoint.py``).
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
        self.position, self.optimizer, self.scheduler = LoopPosition(), None, None  # of the running loop
        self.paused_state: dict[str, Any] | None = None  # what partial_fit's next call continues from
        self.callbacks = callbacks if callbacks is not None else CallbackList([], None, "fit", history)
        # The loop's own callbacks (``loop_callbacks.py``) stand around the user's: history, the kept weights
        # (with early stopping) and then printing before them, checkpoint writing after. An epoch's line is
        # printed once the epoch is recorded and kept, so a Ctrl-C that follows it keeps that epoch.
        self.weight_keeper = WeightKeeper(self)
        self.callbacks.callbacks[:0] = [HistoryRecorder(self), self.weight_keeper, ProgressPrinter(self)]
        if checkpoints is not None:
            self.callbacks.callbacks.append(CheckpointWriter(self, checkpoints))
        self._router_groups: list[bool] = []

    def make_optimizer(self, n_steps: int, weight_decay: float | None = None):
        """The optimizer and scheduler of a loop of ``n_steps`` steps (see :func:`make_optimizer`)."""
        return make_optimizer(self.network, self.settings, n_steps, is_router=self.is_router, weight_decay=weight_decay)

    # ------------------------------------------------------------------ the chain
    def fit_loop(
        self, encoded: dict[str, Any], n_epochs: int, *, stage: str = "", weight_decay: float | None = None,
        validation: dict[str, Any] | None = None, continue_from: dict[str, Any] | None = None,
        epochs: int | None = None, schedule_epochs: int | None = None,
    ) -> list[float]:
        """Train for ``n_epochs`` (fewer with early stopping); return each epoch's mean loss.

        With validation data, scores it after each epoch; with ``early_stopping``, stops
        after ``n_iter_no_change`` epochs without improvement and restores the best epoch.
        With :attr:`checkpoints`, resumes from a checkpoint of this loop, or skips the
        loop when the checkpoint is of a later one (its weights come with it).

        ``partial_fit`` trains ``epochs`` epochs only and keeps the loop open: it starts
        from ``continue_from`` (a :attr:`paused_state`, if any), its schedule spans
        ``schedule_epochs``, and it leaves :attr:`paused_state` for its next call.
        """
        self.losses, self.stage = [], stage
        position = LoopPosition(loop=self.loops_begun)
        self.loops_begun += 1
        saved = self.checkpoints.saved_loop(position.loop) if self.checkpoints is not None else None
        if saved is not None and saved.of_later_loop:
            return self.losses
        n_batches = -(-len(encoded["input_ids"]) // self.settings.batch_size)
        n_steps = -(-n_batches // self.settings.gradient_accumulation_steps)  # optimizer steps per epoch
        optimizer, scheduler = self.make_optimizer((schedule_epochs or n_epochs) * n_steps, weight_decay)
        self.trainable = trainable = trainable_parameters(optimizer)
        self.position, self.optimizer, self.scheduler = position, optimizer, scheduler
        self.kept = WeightSnapshot(trainable, f"the start of {stage}" if stage else "before training")
        self.stopping = EarlyStopping(self.settings.n_iter_no_change, self.settings.tol) if validation is not None else None
        if saved is not None:
            position = saved.restore(self)
            where = (f"{self.stage}: " if self.stage else "") + describe_position(position, n_epochs)
            self.resumed = (str(saved.path), where)
            self._say(f"resumed from {saved.path}: {where}")
        if continue_from is not None:
            position = self.load_state_dict({**continue_from, "network": adapter_state(self.network)})
        routers = {id(param) for name, param in self.network.named_parameters() if self.is_router(name)}
        self._router_groups = [any(id(param) in routers for param in group["params"]) for group in optimizer.param_groups]
        self.callbacks.update(stage=stage, epoch=position.epoch, n_epochs=n_epochs, n_steps=n_steps,
                              resumed_from=None if saved is None else str(saved.path),
                              learning_rates=learning_rates(optimizer, self._router_groups))
        self.callbacks.begin_fit()
        until = n_epochs if epochs is None else min(n_epochs, position.epoch + epochs)
        try:
            if not position.complete:
                self.run_epochs(encoded, n_epochs, position, optimizer, scheduler, validation, until)
            if epochs is not None:  # partial_fit: the loop stays open for the next call
                self.paused_state = {**self.state_dict(), "kept": None}
                del self.paused_state["network"]  # the network itself holds it
        finally:
            # Free gradients and Adam's moments now rather than at the next garbage collection.
            optimizer.zero_grad(set_to_none=True)
            optimizer.state.clear()
        if not position.complete and epochs is None:
            position.complete = True
            self.callbacks.emit_internal("on_loop_end")  # the best weights, then the final checkpoint
        self.kept = None  # an interrupt between loops (PEMT's stages) finds no loop to restore
        return self.losses

    def run_epochs(
        self, encoded: dict[str, Any], n_epochs: int, position: LoopPosition, optimizer, scheduler,
        validation: dict[str, Any] | None, until: int | None = None,
    ) -> None:
        """The epochs from ``position`` on (to ``until``), each ended by :meth:`end_epoch` and a checkpoint."""
        if self._should_stop():  # a checkpoint written at the epoch that stopped
            return
        for epoch in range(position.epoch, n_epochs if until is None else until):
            start = time.perf_counter()
            if position.step == 0:
                position.start_epoch(self.rng.bit_generator.state)
            batches = self.training_batches(encoded)
            self.callbacks.emit("on_epoch_begin", epoch=epoch + 1, step=position.step, n_steps=len(batches),
                                loss=None, validation_score=None, task_scores=None, record=None)
            loss = self.run_epoch(batches, encoded, optimizer, scheduler, f"epoch {epoch + 1}/{n_epochs}", position)
            position.epoch, position.step = epoch + 1, 0
            self.end_epoch(epoch, n_epochs, loss, validation, start)
            if self._should_stop():
                return

    def _should_stop(self) -> bool:
        """Whether the loop ends now: early stopping (the :class:`~.loop_callbacks.WeightKeeper`), or a callback's request."""
        return self.weight_keeper.loop_should_stop() or self._stop_requested()

    def _stop_requested(self) -> bool:
        """Whether a callback asked to stop (:attr:`~skillfit.callbacks.TrainingState.stop_training`)."""
        return self.callbacks.stop_requested

    def training_batches(self, encoded: dict[str, Any]) -> list[list[np.ndarray]]:
        """One epoch's optimizer steps, each a list of ``gradient_accumulation_steps`` batches of row indices.

        The batches are :func:`~..._batching.training_batches`'; the last step of an epoch
        may hold fewer.
        """
        lengths = token_lengths(encoded) if self.settings.group_by_length else None
        batches = training_batches(encoded["tasks"], self.settings.batch_size, self.rng, lengths=lengths)
        k = self.settings.gradient_accumulation_steps
        return [batches[start:start + k] for start in range(0, len(batches), k)]

    def run_epoch(
        self, batches: list[list[np.ndarray]], encoded: dict[str, Any], optimizer, scheduler, description: str,
        position: LoopPosition | None = None,
    ) -> float:
        """One pass over the steps ``batches`` from ``position.step`` on; returns the mean loss per example."""
        position = position if position is not None else LoopPosition()
        self.network.train()
        for step in range(position.step, len(batches)):
            micro_batches = batches[step]
            loss = self.step_on_rows(micro_batches, encoded, optimizer, scheduler)
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"{self.name}: the training loss became {loss} in {description}"
                    f"{' of ' + self.stage if self.stage else ''}, step {step + 1}; training stopped and the "
                    f"estimator keeps its state from before. Lower learning_rate (now {self.settings.learning_rate}) "
                    f"or router_learning_rate (now {self.settings.router_learning_rate}), or check the data."
                )
            rows = sum(len(indices) for indices in micro_batches)
            position.loss_sum += loss * rows
            position.loss_count += rows
            position.step = step + 1
            self.callbacks.emit("on_batch_end", step=step + 1, global_step=self.callbacks.state.global_step + 1,
                                loss=loss, epoch_loss=position.loss_sum / position.loss_count,
                                learning_rates=learning_rates(optimizer, self._router_groups))
            if self._stop_requested():
                break
        return position.loss_sum / position.loss_count

    def step_on_rows(self, micro_batches: list[np.ndarray], encoded: dict[str, Any], optimizer, scheduler) -> float:
        """One optimisation step on the rows of ``encoded`` in ``micro_batches``; returns their mean loss.

        One batch is :meth:`train_step`. Several (``gradient_accumulation_steps``) are
        forwarded and backpropagated one at a time, each weighted by its share of the
        rows, with one routing-noise seed for the step, and then make one update: the
        step of their union, in the memory of one batch.
        """
        if len(micro_batches) == 1:
            return self.train_step(self.make_batch(micro_batches[0], encoded), optimizer, scheduler)
        optimizer.zero_grad(set_to_none=True)
        noise_seed = self.next_noise_seed()
        total = sum(len(indices) for indices in micro_batches)
        loss_sum = 0.0
        for indices in micro_batches:
            loss = self.backward(self.make_batch(indices, encoded), noise_seed, scale=len(indices) / total)
            loss_sum += float(loss.detach()) * len(indices)
        self.update(optimizer, scheduler, torch.as_tensor(encoded["tasks"][np.concatenate(micro_batches)]))
        return loss_sum / total

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
        self, epoch: int, n_epochs: int, loss: float, validation: dict[str, Any] | None, start: float,
    ) -> None:
        """Score the validation data and tell the callbacks: they record the epoch, keep its weights, print it."""
        record: dict[str, Any] = {"epoch": epoch + 1, "loss": loss}
        if self.stage:
            record["stage"] = self.stage
        task_scores = None
        if validation is not None:
            record["validation_score"], task_scores = self.score_validation(validation)
        record["time"] = time.perf_counter() - start
        self.callbacks.emit("on_epoch_end", loss=loss, epoch_loss=loss, record=record,
                            validation_score=record.get("validation_score"), task_scores=task_scores)

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """The running loop's whole state, which :meth:`load_state_dict` puts back (checkpoints hold it).

        Where the loop stands (``position``), ``history``, the RNG states, the trained
        tensors (``network``), and while the loop runs its optimizer, schedule, the
        weights an interrupt keeps (``kept``) and early stopping's record.
        """
        position = self.position
        state: dict[str, Any] = {
            "position": dict(vars(position)), "history": list(self.history), "losses": list(self.losses),
            "numpy_rng": self.rng.bit_generator.state, "noise_seed": self.noise_seed, "steps_taken": self.steps_taken,
            "best_score": self.best_score, "kept_task_scores": self.kept_task_scores,
            "network": adapter_state(self.network), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        }
        if position.complete:
            return state
        state.update(optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                     kept=snapshot_state(self.kept))
        stopping = self.stopping
        if stopping is not None:
            state["stopping"] = {
                "best_score": stopping.best_score, "best_task_scores": stopping.best_task_scores,
                "last_task_scores": stopping.last_task_scores,
                "epochs_without_improvement": stopping.epochs_without_improvement,
                "best_weights": "kept" if stopping.best_weights is self.kept else snapshot_state(stopping.best_weights),
            }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> LoopPosition:
        """Put back a :meth:`state_dict` into this loop, whose optimizer and schedule were just made; return its position.

        A mid-epoch state draws the epoch's shuffle again from the epoch's start state,
        which gives the same batches.
        """
        expected, given = set(adapter_state(self.network)), set(state["network"])
        if given != expected:
            raise ValueError(f"the saved tensors do not fit the network (missing {sorted(expected - given)[:5]}, "
                             f"unexpected {sorted(given - expected)[:5]})")
        self.network.load_state_dict(state["network"], strict=False)
        self.position = position = LoopPosition(**state["position"])
        self.history[:] = state["history"]
        self.losses = list(state["losses"])
        self.noise_seed, self.steps_taken = int(state["noise_seed"]), int(state["steps_taken"])
        self.best_score, self.kept_task_scores = state["best_score"], state["kept_task_scores"]
        self.rng.bit_generator.state = position.epoch_rng if position.step else state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        if position.complete:
            return position
        optimizer_state = state["optimizer"]
        for group, current in zip(optimizer_state["param_groups"], self.optimizer.param_groups):
            # How to step is this run's choice (fused on CUDA), not the saved one's.
            group.update({key: current[key] for key in IMPLEMENTATION_FLAGS if key in current})
        self.optimizer.load_state_dict(optimizer_state)
        self.scheduler.load_state_dict(state["scheduler"])
        self.kept = snapshot_from_state(self.trainable, state["kept"])
        saved_stopping = state.get("stopping")
        if self.stopping is not None and saved_stopping is not None:
            stopping = self.stopping
            stopping.best_score = saved_stopping["best_score"]
            stopping.best_task_scores, stopping.last_task_scores = saved_stopping["best_task_scores"], saved_stopping["last_task_scores"]
            stopping.epochs_without_improvement = int(saved_stopping["epochs_without_improvement"])
            best = saved_stopping["best_weights"]
            stopping.best_weights = self.kept if best == "kept" else snapshot_from_state(self.trainable, best)
        return position

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
