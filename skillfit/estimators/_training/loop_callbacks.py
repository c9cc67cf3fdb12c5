"""The loop's own callbacks: its history, the weights it keeps (and early stopping), its checkpoints.

They ride the same events as a user's callbacks (:mod:`skillfit.callbacks`), in this
order around them: :class:`HistoryRecorder`, :class:`WeightKeeper` and then the progress
printer (``progress.py``) before, :class:`CheckpointWriter` after, so that an epoch's
line is printed once the epoch is recorded and kept (a Ctrl-C that follows the line keeps
it), a user's callback sees the epoch recorded, and a checkpoint holds what the user's
callbacks decided. Two
events are the loop's own and never reach a user's callback: ``on_loop_end`` (a loop
finished its epochs; PEMT runs two loops in one call) and the question
``loop_should_stop``. History and kept weights are every rank's (each rank keeps the
same copy); the printer and the checkpoint writer act on rank 0 only.
"""

from __future__ import annotations

from typing import Any

from .loop_state import WeightSnapshot


class LoopCallback:
    """Base of the loop's own callbacks: marked as the loop's (``_skillfit_loop_own``), and whether every rank runs them."""

    _skillfit_loop_own = True
    _skillfit_every_rank = False

    def __init__(self, loop: Any) -> None:
        self.loop = loop


class HistoryRecorder(LoopCallback):
    """Appends each epoch's record to ``history`` (the estimator's ``history_``) and its loss to ``losses``."""

    _skillfit_every_rank = True

    def on_epoch_end(self, state) -> None:
        self.loop.history.append(state.record)
        self.loop.losses.append(state.loss)


class WeightKeeper(LoopCallback):
    """The weights an interrupt or the end of a loop puts back, and early stopping.

    With validation data (``loop.stopping``, an :class:`~.loop_state.EarlyStopping`),
    the best epoch's weights; else the last complete epoch's. With ``early_stopping``,
    the loop stops after ``n_iter_no_change`` epochs without improvement and ends on
    the best epoch's weights.
    """

    _skillfit_every_rank = True

    def on_epoch_end(self, state) -> None:
        loop = self.loop
        name = f"epoch {state.epoch}" + (f" of {state.stage}" if state.stage else "")
        snapshot = lambda: WeightSnapshot(loop.trainable, name)  # noqa: E731
        if loop.stopping is None:
            loop.kept = snapshot()
            return
        loop.stopping.update(state.validation_score, state.task_scores, snapshot)
        loop.kept = loop.stopping.best_weights

    def loop_should_stop(self) -> bool:
        """Whether early stopping ends the loop now; says so."""
        loop, stopping = self.loop, self.loop.stopping
        if not (loop.settings.early_stopping and stopping is not None and stopping.should_stop):
            return False
        loop._say(f"early stop: no improvement for {stopping.epochs_without_improvement} epochs; "
                  f"keeping {stopping.best_weights.description}")
        return True

    def on_loop_end(self, state) -> None:
        """After the last epoch: the best epoch's weights with early stopping; the validation summary."""
        loop, stopping = self.loop, self.loop.stopping
        if stopping is None or stopping.best_score is None:
            return
        if loop.settings.early_stopping:
            stopping.best_weights.restore()
            loop.best_score, loop.kept_task_scores = stopping.best_score, stopping.best_task_scores
        else:
            loop.best_score, loop.kept_task_scores = stopping.best_score, stopping.last_task_scores


class CheckpointWriter(LoopCallback):
    """Writes the loop's state to its checkpoint file: at every epoch end, every ``checkpoint_every`` steps, at the end.

    A step's checkpoint is skipped at the last step of an epoch (the epoch's follows at
    once) and when a callback asked to stop (the epoch end that follows writes it).
    """

    def __init__(self, loop: Any, checkpoints: Any) -> None:
        super().__init__(loop)
        self.checkpoints = checkpoints

    def on_batch_end(self, state) -> None:
        if state.step < state.n_steps and not state.stop_training and self.checkpoints.step_due(self.loop.steps_taken):
            self.checkpoints.save(self.loop)

    def on_epoch_end(self, state) -> None:
        self.checkpoints.save(self.loop)

    def on_loop_end(self, state) -> None:
        """The final weights: a later call with the same fingerprint returns them at once."""
        self.checkpoints.save(self.loop)
