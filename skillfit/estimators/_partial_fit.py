"""``partial_fit``: training in passes, one epoch per call, as scikit-learn's incremental estimators.

The first call on an unfitted estimator fixes the tasks (those of its ``X``) and, for
classifiers, the labels (``classes=``, else those of its ``y``); it builds the model and
trains one epoch. Each later call trains one more epoch on the data it is given, from
the optimizer's state, schedule, RNG states and routing-noise step where the previous
call left them: ``max_epochs`` calls on the same data give, bit for bit on the CPU, the
model of one ``fit`` (without early stopping). The schedule spans ``max_epochs`` calls;
after it has ended a linear or cosine schedule's rate is 0, so later calls warn and
change nothing (use ``lr_schedule="constant"`` to train on). ``early_stopping``,
``validation_fraction`` and ``checkpoint_dir`` are not used: the caller scores between
calls (as Optuna's pruning does) and pickles the estimator to keep its progress.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from .._warnings import warn_user
from ._concurrency import changes_model
from ._training.run_context import TrainingRun
from ._task_free.unknown_tasks import INFERRING_MODES


class PartialFitMixin:
    """``partial_fit`` for the estimators (see the module docstring)."""

    @changes_model
    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> "PartialFitMixin":
        """Train one epoch on ``(X, y)``, continuing from the previous call.

        Parameters
        ----------
        X : DataFrame, list of (text, task id) pairs, or array of shape (n, 2)
            Texts and task ids. The first call fixes the tasks; later calls take rows
            of those tasks only (new tasks: :meth:`adapt`).
        y : array-like of shape (n,)
            Labels (classifiers) or target texts (text-to-text).
        classes : array-like, optional
            Classifiers: every label that any call will bring, given at the first
            call (as scikit-learn's ``partial_fit``); default: the labels of the first
            call's ``y``. A task may take, in later calls, labels of ``classes`` it has
            not had yet. Later calls may repeat the same ``classes`` or omit it.
            Text-to-text estimators take none.

        Returns
        -------
        self
            The estimator, fitted.

        Raises
        ------
        ConcurrentUseError
            When another thread uses the estimator during the call.

        See Also
        --------
        fit : Train all epochs in one call, with early stopping and checkpoints.

        Notes
        -----
        ``max_epochs`` calls on the same data give the model of one ``fit``. The
        learning rates and schedule are those of the first call; ``early_stopping``
        and ``checkpoint_dir`` are not used. An error or Ctrl-C leaves the estimator as
        it was before the call. ``fit`` or ``adapt`` start a new sequence of passes.

        References
        ----------
        scikit-learn's incremental learning: https://scikit-learn.org/stable/computing/scaling_strategies.html

        Examples
        --------
        >>> from skillfit import PolyClassifier
        >>> from skillfit.datasets import make_tiny_backbone
        >>> X = [("good film", "movies"), ("bad film", "movies"), ("win cash now", "sms"), ("see you soon", "sms")]
        >>> y = ["pos", "neg", "spam", "ham"]
        >>> clf = PolyClassifier(backbone=make_tiny_backbone(), n_skills=2, max_epochs=3, random_state=0)
        >>> for _ in range(3):
        ...     clf = clf.partial_fit(X, y, classes=["ham", "neg", "pos", "spam"])
        >>> clf.n_iter_
        3
        """
        self._validate_params()
        texts, tasks = self._validated_inputs(X)
        if not self._supports_warm_start:
            raise ValueError(f"{type(self).__name__} cannot train in passes (partial_fit): its stages convert the "
                             "network. Use fit.")
        if self._starts_processes():
            raise ValueError(f"partial_fit trains in this process; n_devices={self.n_devices} would start new "
                             "processes at every call. Use fit for a data-parallel fit, or launch under torchrun.")
        with TrainingRun(self, "partial_fit") as run:  # all or nothing: an error leaves the estimator as it was
            self._partial_fit_pass(run, texts, tasks, y, classes)
        return self

    def _partial_fit_pass(self, run: TrainingRun, texts: list[str], tasks: np.ndarray, y: Any, classes: Any) -> None:
        first = not hasattr(self, "network_")
        if first:
            targets = self._partial_fit_targets(y, len(texts), classes, None)
            self.tasks_, task_index = np.unique(tasks, return_inverse=True)
            state = None
        else:
            task_index = self._fitted_task_indices(
                tasks, "partial_fit", "partial_fit continues the tasks it was fitted on, but X has new task(s) "
                "{unknown}; learn them with adapt(), or call fit() to start over.",
            )
            targets = self._partial_fit_targets(y, len(texts), classes, task_index)
            # A copy: the optimizer takes over the state's tensors and steps them in place, and a
            # failed call must leave the stored state as it was.
            state = copy.deepcopy(self.__dict__.get("_partial_state"))
        seed = run.start(seed=None if state is None else state["seed"])  # no checkpoints: see the module docstring
        done = 0 if state is None else state["position"]["epoch"]
        if done >= self.max_epochs and self.lr_schedule != "constant":
            warn_user(
                f"partial_fit has made max_epochs={self.max_epochs} passes: the {self.lr_schedule} schedule has ended "
                "at a learning rate of 0, so this call does not change the model. Raise max_epochs before the first "
                "call, or use lr_schedule='constant'.", UserWarning,
            )
        with run.seeded():
            if first:
                self._build_model(targets, task_index)
                self.history_ = []
            else:  # train a copy: an error leaves the model as it was
                run.continue_fitted_model()
                self._allow_label_pairs(task_index, targets)
            loop = run.training_loop()
            loop.fit_loop(self._encode(texts, task_index, targets), max(self.max_epochs, done + 1),
                          continue_from=state, epochs=1, schedule_epochs=self.max_epochs)
        self._partial_state = {**loop.paused_state, "seed": seed}
        self._finish_fit(loop)
        if first and self.handle_unknown_task in INFERRING_MODES:
            self._train_task_identifier(texts, task_index)

    def _partial_fit_targets(self, y: Any, n_samples: int, classes: Any, task_index: np.ndarray | None) -> Any:
        """The targets of a call; the first (``task_index`` None) fixes the labels. Text to text: ``classes`` refused."""
        if classes is not None:
            raise ValueError(f"{type(self).__name__} generates text and has no classes; call partial_fit(X, y).")
        return self._check_targets(y, n_samples) if task_index is None else self._warm_start_targets(y, n_samples, task_index)

    def _allow_label_pairs(self, task_index: np.ndarray, targets: Any) -> None:
        """Classifiers: let each task predict the labels of ``classes_`` that a later call gives it."""
