"""``adapt``: new tasks from a few examples after ``fit`` (Poly-z, Poly-µ, or everything)."""

from __future__ import annotations

from numbers import Integral
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from ._base import SkillEstimatorBase

from .._validation import NONE, Interval, Options, validate_arguments
from ..skills import add_tasks, train_only_new_tasks
from ._concurrency import changes_model
from ._training.run_context import TrainingRun

ADAPT_MODES = ("routing", "average", "all")
ADAPT_CONSTRAINTS = {"mode": [Options(*ADAPT_MODES)], "max_epochs": [Interval(Integral, 1, None), NONE]}


class AdaptMixin:
    """``adapt`` and the checks and freezing around it."""

    # -------------------------------------------------------------- new tasks
    @changes_model
    def adapt(self, X: Any, y: Any, *, mode: str = "routing", max_epochs: int | None = None) -> "SkillEstimatorBase":
        """Learn new tasks from a few examples after ``fit``, keeping what was learned.

        The few-shot transfer of [1]_: the skills learned on the fitted tasks are
        reused by the new tasks, which train only what is theirs (their routing, their
        exclusive skills, head rows for their new labels), or, with ``mode="all"``,
        every trainable parameter. The new task ids are appended to ``tasks_``; new
        labels extend ``classes_``. The task identifier, if the model has one, learns
        the new tasks from the same rows.

        Parameters
        ----------
        X : DataFrame, list of (text, task) or array of shape (n_samples, 2)
            Examples of the new tasks (task ids not seen in ``fit``).
        y : array-like of shape (n_samples,)
            Their targets; new labels extend ``classes_``.
        mode : {"routing", "average", "all"}, default="routing"
            ``"routing"`` (Poly-z / MHR-z): new routing rows, new exclusive skills and
            head rows for new labels are trained; everything learned before is frozen.
            ``"average"`` (Poly-mu): each new task gets its own adapter, started from
            the uniform average of the shared skills, and fine-tunes it.
            ``"all"``: new rows are added and every trainable parameter is
            fine-tuned; rows of fitted tasks are then allowed in ``X``.
            With ``"routing"`` and ``"average"``, predictions for fitted tasks stay
            bit-identical.
        max_epochs : int, optional
            Epochs over ``X``; defaults to the estimator's ``max_epochs``.

        Returns
        -------
        object
            The estimator itself (``self``), now fitted on the old and the new tasks.

        Raises
        ------
        ValueError
            With ``"routing"`` or ``"average"``: if ``X`` has rows of fitted tasks or
            no new task, or if the estimator keeps no per-task parameters and the new
            tasks bring no new labels (nothing to train; use ``mode="all"``).
        FloatingPointError
            If the training loss becomes NaN or infinite; the estimator stays as it was.
        ConcurrentUseError
            If another thread is inside a call on this estimator.

        See Also
        --------
        skillfit.PolyClassifier.fit : Train on the first tasks.
        skillfit.PolyClassifier.task_similarity : Compare the tasks' routing, new ones included.
        skillfit.skills.add_tasks : Add routing rows (and exclusive skills) for new tasks.
        skillfit.skills.train_only_new_tasks : Freeze everything but the new tasks' rows.

        Notes
        -----
        Like ``fit``, ``adapt`` is all or nothing: an error leaves the estimator as
        it was, and Ctrl-C keeps the best epoch so far (with ``"routing"`` and ``"average"`` the
        fitted tasks unchanged).

        References
        ----------
        .. [1] Caccia, Ponti, Su, Pereira, Le Roux, Sordoni. "Multi-Head Adapter Routing for
           Cross-Task Generalization." NeurIPS 2023 (arXiv:2211.03831).
        .. [2] Ponti, Sordoni, Bengio, Reddy. "Combining Parameter-efficient Modules for
           Task-level Generalisation." EACL 2023 (arXiv:2202.13914).

        Examples
        --------
        >>> from skillfit import PolyClassifier
        >>> from skillfit.datasets import make_tiny_backbone
        >>> X = [("a great film", "movies"), ("a dull plot", "movies"),
        ...      ("win a free prize now", "sms"), ("see you at noon", "sms")]
        >>> y = ["pos", "neg", "spam", "ham"]
        >>> clf = PolyClassifier(backbone=make_tiny_backbone(), max_epochs=1, random_state=0).fit(X, y)
        >>> before = clf.predict(X)

        A third task, learned from two rows; its labels are new:

        >>> X_new = [("who wrote the book", "questions"), ("where is the city", "questions")]
        >>> clf.adapt(X_new, ["HUM", "LOC"], mode="routing")
        PolyClassifier(...)
        >>> clf.tasks_
        array(['movies', 'sms', 'questions'], dtype=object)
        >>> clf.classes_
        array(['HUM', 'LOC', 'ham', 'neg', 'pos', 'spam'], dtype=object)
        >>> bool((clf.predict(X) == before).all())  # the fitted tasks are untouched
        True
        >>> set(clf.predict(X_new)) <= {"HUM", "LOC"}
        True

        ``mode="average"`` starts each new task from the average of the shared skills
        (Poly-mu):

        >>> clf.adapt([("call me later", "chat"), ("good night", "chat")], ["ham", "ham"], mode="average")
        PolyClassifier(...)
        >>> len(clf.tasks_)
        4
        """
        self._check_fitted()
        validate_arguments(f"{type(self).__name__}.adapt", {"mode": mode, "max_epochs": max_epochs}, ADAPT_CONSTRAINTS)
        texts, tasks = self._validated_inputs(X)
        new_tasks = self._new_tasks(tasks, mode)
        raw_targets = self._check_adapt_targets(y, len(texts))
        if self._starts_processes():
            return self._run_on_new_processes(self, "adapt", (X, y), self.device_, mode=mode, max_epochs=max_epochs)
        with TrainingRun(self, "adapt") as run:  # all or nothing: an error leaves the estimator as it was
            self._adapt_new_tasks(run, texts, tasks, new_tasks, raw_targets, mode, max_epochs)
        return self

    def _adapt_new_tasks(
        self, run: TrainingRun, texts: list[str], tasks: np.ndarray, new_tasks: list, raw_targets: Any, mode: str,
        max_epochs: int | None,
    ) -> None:
        """Everything ``adapt`` does after checking its inputs: new rows, the freeze, training, summaries."""
        self.__dict__.pop("_partial_state", None)  # the optimizer's tables no longer fit the grown model
        run.start({"mode": mode, "max_epochs": max_epochs}, (texts, tasks, raw_targets), continues=True)
        with run.seeded():
            run.continue_fitted_model()  # grows and trains a copy that shares the frozen backbone
            n_old = len(self.tasks_)
            self.tasks_ = np.concatenate([self.tasks_, np.asarray(new_tasks, dtype=self.tasks_.dtype)])
            task_index = self._lookup_tasks(tasks)[0]  # every task is known now
            targets, new_output_parameters = self._add_task_outputs(raw_targets, task_index, n_old)
            add_tasks(self.network_, len(new_tasks), average=mode == "average")
            self._add_task_inputs(new_tasks)
            self.network_.to(self.device_)
            restore = self._freeze_for_adapt(mode, n_old, new_output_parameters)
            try:
                self._check_something_trains(mode)
                loop = run.training_loop()
                unchanged = " and the fitted tasks are unchanged." if mode != "all" else "."
                with run.interruptible(needs_an_epoch=False, kept_note=unchanged, resumable=True):
                    loop.fit_loop(
                        self._encode(texts, task_index, targets), max_epochs or self.max_epochs,
                        weight_decay=None if mode == "all" else 0.0, stage=f"adapt:{mode}",
                    )
                self.adapt_loss_curve_ = loop.losses
            finally:
                restore()
            self._update_task_identifier(texts, task_index)
        self._set_routing_attributes()
        self._attach_routing_prototypes()

    def _check_task_id_type(self, tasks: np.ndarray, action: str) -> None:
        """Task ids of another type than ``tasks_`` (int against str) can only be a mistake: refuse them."""
        is_int = lambda ids: ids.dtype.kind in "iu"  # noqa: E731
        if len(tasks) and is_int(tasks) != is_int(self.tasks_):
            kind = lambda ids: "integer" if is_int(ids) else "string"  # noqa: E731
            raise TypeError(
                f"{type(self).__name__} was fitted with {kind(self.tasks_)} task ids, but {action}() got "
                f"{kind(tasks)} ones (e.g. {tasks.tolist()[:3]}); pass task ids of the same type as tasks_ "
                f"({self.tasks_.tolist()[:3]}...)."
            )

    def _new_tasks(self, tasks: np.ndarray, mode: str) -> list:
        """The task ids of ``adapt``'s ``X`` that ``fit`` did not see, in order; errors for what ``mode`` forbids."""
        self._check_task_id_type(tasks, "adapt")
        known = set(self.tasks_.tolist())
        new_tasks = [task for task in dict.fromkeys(tasks.tolist()) if task not in known]
        seen = sorted({task for task in tasks.tolist() if task in known}, key=str)
        if seen and mode != "all":
            raise ValueError(
                f"adapt(mode={mode!r}) learns new tasks only, but X has rows of fitted task(s) {seen[:10]}; "
                "drop them, refit, or use mode='all'."
            )
        if not new_tasks and mode != "all":
            raise ValueError("adapt() needs examples of at least one task that was not seen in fit.")
        return new_tasks

    def _freeze_for_adapt(self, mode: str, n_old_tasks: int, new_output_parameters: list[torch.nn.Parameter]):
        """Make only what ``mode`` trains require grad; return a function that undoes it.

        ``"all"`` trains everything that trains in ``fit``. The other modes train the new
        tasks' rows of every per-task tensor (the old rows get zero gradient and, with
        no weight decay, stay bit-identical) and the new labels' head rows.
        """
        if mode == "all":
            return lambda: None
        descriptions = getattr(self.network_, "task_descriptions", None)
        per_task = [descriptions] if descriptions is not None and descriptions.requires_grad else []
        return train_only_new_tasks(self.network_, n_old_tasks, extra_per_task=per_task, extra_new=new_output_parameters)

    def _check_something_trains(self, mode: str) -> None:
        """Refuse an ``adapt`` that would train no parameter."""
        if not any(param.requires_grad for param in self.network_.parameters()):
            raise ValueError(
                f"adapt(mode={mode!r}) has nothing to train: {type(self).__name__} keeps no per-task "
                "parameters and the new tasks bring no new labels. Use mode='all'."
            )
