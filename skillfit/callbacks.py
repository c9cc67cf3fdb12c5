"""Callbacks: user code that the training loop calls at fixed points of a fit.

A callback subclasses :class:`Callback` and overrides the events it needs; each event
receives the :class:`TrainingState` of the running call. Pass callbacks with the
estimator's ``callbacks`` parameter; ``clone`` (and so every search) copies them with
the estimator. The events, in order::

    on_fit_begin                      once per fit or adapt call
        on_epoch_begin                each epoch (of each stage: PEMT trains two)
            on_batch_end              after each optimisation step
        on_epoch_end                  after the epoch's validation scores
    on_fit_end                        once training succeeded, on the fitted estimator

Setting ``state.stop_training = True`` in ``on_batch_end`` ends the epoch after that
step; in ``on_epoch_end``, the training after that epoch. Training then ends as it
ends after its last epoch: with ``early_stopping`` the best epoch's weights are kept,
and a checkpoint records the loop as complete.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Callback", "TrainingState", "EVENTS"]

EVENTS = ("on_fit_begin", "on_epoch_begin", "on_batch_end", "on_epoch_end", "on_fit_end")


class Callback:
    """Base class of callbacks: override any of the ``on_...`` events; the others do nothing.

    The events, each called with the :class:`TrainingState` of the running call, are
    ``on_fit_begin``, ``on_epoch_begin``, ``on_batch_end``, ``on_epoch_end`` and
    ``on_fit_end`` (their order: this module's docstring). A callback is a
    plain object: ``clone`` deep-copies it, pickling saves it with the estimator, and
    one instance sees every fit of its estimator (reset per-fit state in
    :meth:`on_fit_begin`). In a data-parallel fit (``n_devices > 1``), callbacks run in
    the process of rank 0 only.

    See Also
    --------
    TrainingState : What each event receives.
    skillfit.loggers.CSVLogger : A callback that logs each epoch to a CSV file.

    Examples
    --------
    >>> from skillfit.callbacks import Callback
    >>> class StopBelow(Callback):
    ...     def __init__(self, loss):
    ...         self.loss = loss
    ...     def on_epoch_end(self, state):
    ...         if state.loss < self.loss:
    ...             state.stop_training = True
    >>> StopBelow(0.1).loss
    0.1
    """

    def on_fit_begin(self, state: "TrainingState") -> None:
        """Called once per ``fit`` or ``adapt``, before the first step."""

    def on_epoch_begin(self, state: "TrainingState") -> None:
        """Called before each epoch; ``state.epoch`` is the epoch about to run (from 1)."""

    def on_batch_end(self, state: "TrainingState") -> None:
        """Called after each optimisation step; ``state.loss`` is the batch's mean loss."""

    def on_epoch_end(self, state: "TrainingState") -> None:
        """Called after each epoch; ``state.loss`` is its mean loss, ``state.record`` its ``history_`` entry."""

    def on_fit_end(self, state: "TrainingState") -> None:
        """Called once training succeeded; ``state.estimator`` is fitted."""


@dataclass
class TrainingState:
    """What the training loop tells callbacks: where it stands and how it goes.

    The loop makes one per call and updates its fields before each event; each field
    is also an attribute.

    Parameters
    ----------
    estimator : estimator
        The estimator being trained (fitted, with ``network_`` set, from the first
        epoch on).
    call : str
        ``"fit"`` or ``"adapt"``.
    stage : str
        ``""``, or the stage being trained: ``"stage 1"`` / ``"stage 2"`` (PEMT),
        ``"adapt:<mode>"``.
    epoch, n_epochs : int
        The current epoch (from 1; 0 before the first) and the epochs of this stage.
    step, n_steps : int
        Steps done in the current epoch, and the epoch's number of batches.
    global_step : int
        Optimisation steps of this call so far, over its stages.
    loss : float or None
        At ``on_batch_end`` the batch's mean loss; at ``on_epoch_end`` the epoch's.
    epoch_loss : float or None
        The mean loss of the current epoch's steps so far.
    learning_rates : dict
        The scheduled rates after the latest step: ``{"learning_rate": ...}``, plus
        ``"router_learning_rate"`` where routers train.
    validation_score : float or None
        The epoch's validation score (higher is better) when there is validation data.
    task_scores : dict or None
        The epoch's validation score of each task.
    record : dict or None
        The epoch's entry of ``history_`` (set at ``on_epoch_end``).
    history : list of dict
        The estimator's ``history_`` so far.
    resumed_from : str or None
        The checkpoint file this call resumed from, if it did.
    stop_training : bool
        Set to True to stop: after this step (``on_batch_end``) or epoch (``on_epoch_end``).

    See Also
    --------
    Callback : The events that receive it.

    Examples
    --------
    >>> from skillfit.callbacks import TrainingState
    >>> state = TrainingState(estimator=None, call="fit", epoch=2, n_epochs=5)
    >>> state.stop_training
    False
    """

    estimator: Any
    call: str
    stage: str = ""
    epoch: int = 0
    n_epochs: int = 0
    step: int = 0
    n_steps: int = 0
    global_step: int = 0
    loss: float | None = None
    epoch_loss: float | None = None
    learning_rates: dict[str, float] = field(default_factory=dict)
    validation_score: float | None = None
    task_scores: dict | None = None
    record: dict | None = None
    history: list = field(default_factory=list)
    resumed_from: str | None = None
    stop_training: bool = False


def check_callbacks(callbacks: Any) -> list:
    """``callbacks`` as a list, or a ValueError/TypeError that says what a callback must be."""
    if callbacks is None:
        return []
    if not isinstance(callbacks, (list, tuple)):
        raise TypeError(
            f"callbacks must be a list of skillfit.callbacks.Callback objects or None, got "
            f"{type(callbacks).__name__}. Wrap a single callback in a list: callbacks=[my_callback]."
        )
    for callback in callbacks:
        if isinstance(callback, type):
            raise TypeError(f"callbacks holds the class {callback.__name__}; pass an instance: {callback.__name__}().")
        names = [name for name in dir(callback) if name.startswith("on_") and callable(getattr(callback, name, None))]
        unknown = [name for name in names if name not in EVENTS]
        if unknown:
            raise ValueError(
                f"The callback {type(callback).__name__} defines {unknown}, which no event calls; the events are "
                f"{list(EVENTS)}. Rename the method(s)."
            )
        if not names:
            raise TypeError(
                f"callbacks holds {type(callback).__name__!s} object {callback!r:.60}, which has no event method; "
                "subclass skillfit.callbacks.Callback and override the events you need."
            )
    return list(callbacks)


class CallbackList:
    """The callbacks of one call and their shared :class:`TrainingState` (internal).

    The loop calls :meth:`emit`; on a rank other than 0 of a data-parallel fit nothing
    is called, and whether to stop is rank 0's decision (the loop broadcasts it).
    """

    def __init__(self, callbacks: list, estimator: Any, call: str, history: list) -> None:
        self.callbacks = list(callbacks)
        self.state = TrainingState(estimator=estimator, call=call, history=history)
        self.active = True  # False on ranks other than 0
        self.fit_begun = False

    def update(self, **changes: Any) -> None:
        """Set fields of the state."""
        for name, value in changes.items():
            setattr(self.state, name, value)

    def emit(self, event: str, **changes: Any) -> None:
        """Update the state with ``changes``, then call ``event`` on every callback, in order.

        On a rank other than 0, only the loop's own callbacks marked ``_skillfit_every_rank``.
        """
        self.update(**changes)
        self._call(event, self.callbacks)

    def emit_internal(self, event: str) -> None:
        """An event of the loop's own callbacks only (``on_loop_end``), which a user's callback never receives."""
        self._call(event, [callback for callback in self.callbacks if getattr(callback, "_skillfit_loop_own", False)])

    def _call(self, event: str, callbacks: list) -> None:
        """Call ``event`` on those of ``callbacks`` that run on this rank and have it, in order."""
        for callback in callbacks:
            if self.active or getattr(callback, "_skillfit_every_rank", False):
                method = getattr(callback, event, None)
                if method is not None:
                    method(self.state)

    @property
    def has_user_callbacks(self) -> bool:
        """Whether any callback is a user's (not one of the loop's own)."""
        return any(not getattr(callback, "_skillfit_loop_own", False) for callback in self.callbacks)

    def begin_fit(self) -> None:
        """``on_fit_begin``, once per call (PEMT's second stage does not call it again)."""
        if not self.fit_begun:
            self.fit_begun = True
            self.emit("on_fit_begin")

    @property
    def stop_requested(self) -> bool:
        """Whether a callback set ``stop_training``."""
        return bool(self.state.stop_training)


def learning_rates(optimizer: Any, router_groups: list[bool]) -> dict[str, float]:
    """The rate of each kind of optimizer group, named by the estimator parameter that sets it."""
    rates: dict[str, float] = {}
    for group, is_router in zip(optimizer.param_groups, router_groups):
        rate = float(group["lr"])
        if math.isfinite(rate):
            rates["router_learning_rate" if is_router else "learning_rate"] = rate
    return rates
