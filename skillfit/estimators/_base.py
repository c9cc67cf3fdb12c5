"""The shared base of every skillfit estimator: parameters, ``fit`` and the glue around it.

What happens where (``docs/architecture.md`` has the whole map):

- the parameters are dataclass fields below, checked by ``_validate_params``;
- the hooks that kinds and methods fill in are declared in ``_hooks.py``;
- the training loop (``fit_loop -> run_epoch -> train_step``, early stopping,
  snapshots, interrupts) is ``_training/loop.py``; this class builds it and hands it data;
- batching is ``_batching.py``; seeds, quiet logs and autocast are ``_runtime.py``;
- saving, loading, pickling and peft export come from ``_persistence/saving.py``; ``adapt`` from
  ``_adapt.py``, ``task_similarity`` from ``_similarity.py``, ``partial_fit`` from
  ``_partial_fit.py``, a training call's rollback, seed, checkpoint file and processes from ``_training/run_context.py``.
"""

from __future__ import annotations

import os
from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted


from .._warnings import warn_user
from .._inputs import check_texts_and_tasks
from ..callbacks import CallbackList, check_callbacks
from .._validation import (
    CALLBACK_LIST,
    NONE,
    PATH,
    RANDOM_STATE,
    STRING,
    Interval,
    Options,
    StringList,
    validate_parameters,
)
from ..backbones import DEFAULT_BACKBONE, resolve_device
from ..skills import UNKNOWN_TASK, SkillConfig
from ..skills.inject import check_target_pattern
from ._training.checkpoint import FitCheckpoints
from ._concurrency import changes_model
from ._training.distributed import BACKENDS, DataParallelLoop, rank_and_world
from ._hooks import EstimatorHooks
from ._memory_estimate import MemoryEstimateMixin
from ._persistence.folder_format import check_folder_path
from .._precision import BACKBONE_DTYPES, QUANTIZATIONS
from ._params import estimator_parameters, parameter, parameter_constraints
from ._registry import register
from ._persistence.saving import PersistenceMixin
from ._training.optimizer import LR_SCHEDULES
from ._adapt import AdaptMixin
from ._model_build import ModelBuildMixin
from ._prediction import PredictionBatchesMixin
from ._validation_data import ValidationDataMixin
from ._partial_fit import PartialFitMixin
from ._training.run_context import ProcessLaunchMixin, TrainingRun
from ._similarity import TaskSimilarityMixin
from ._training.loop import TrainingLoop, TrainingSettings
from ._task_free.unknown_tasks import INFERRING_MODES, UNKNOWN_TASK_MODES, UnknownTaskMixin

# What a warm-started fit may change: how it trains and runs. Any other parameter shapes
# the fitted model (backbone, layers, rank, skills, head), so a change needs a new fit.
WARM_START_ADJUSTABLE = frozenset({
    "learning_rate", "router_learning_rate", "weight_decay", "warmup_fraction", "lr_schedule",
    "gradient_accumulation_steps", "max_epochs", "batch_size",
    "max_length", "device", "random_state", "verbose", "text_column", "task_column", "handle_unknown_task",
    "early_stopping", "validation_fraction", "n_iter_no_change", "tol", "validation_scoring", "embed_backbone",
    "group_by_length", "merged_inference", "gradient_checkpointing", "torch_compile", "n_devices",
    "distributed_backend", "trust_remote_code", "warm_start", "checkpoint_dir", "checkpoint_every", "callbacks",
    "unknown_task_threshold", "route_top_k", "route_temperature",
    "max_target_length", "max_new_tokens", "num_beams", "do_sample", "scoring",
})

MAX_RATE = 1e3  # the largest learning rate or weight decay a parameter accepts


@estimator_parameters
class SkillEstimatorBase(
    AdaptMixin, TaskSimilarityMixin, ProcessLaunchMixin, ModelBuildMixin, ValidationDataMixin, PredictionBatchesMixin,
    UnknownTaskMixin, PersistenceMixin, MemoryEstimateMixin, PartialFitMixin, EstimatorHooks, BaseEstimator,
):
    """Common parameters, ``fit`` and ``adapt`` of skillfit estimators.

    Not meant to be used directly: use a method class such as
    :class:`~skillfit.CPolyClassifier`. Parameters are dataclass fields declared with
    :func:`parameter`, so each one's default and constraints stand in one place and
    ``__init__`` only stores them.
    """

    backbone: str = parameter(DEFAULT_BACKBONE, STRING)
    backbone_dtype: str = parameter("auto", Options(*BACKBONE_DTYPES))
    quantization: str | None = parameter(None, NONE, Options(*QUANTIZATIONS))
    target_modules: list[str] | str | None = parameter(None, NONE, StringList(), STRING)
    rank: int = parameter(8, Interval(Integral, 1, None))
    alpha: float = parameter(16.0, Interval(Real, 0, None, closed="neither"))
    dropout: float = parameter(0.0, Interval(Real, 0, 1, closed="left"))
    # Rates and decay above MAX_RATE only diverge, and torch's optimizers overflow past float32's range.
    learning_rate: float = parameter(2e-3, Interval(Real, 0, MAX_RATE, closed="right"))
    router_learning_rate: float = parameter(0.5, Interval(Real, 0, MAX_RATE, closed="right"))
    weight_decay: float = parameter(0.0, Interval(Real, 0, MAX_RATE))
    warmup_fraction: float = parameter(0.1, Interval(Real, 0, 1, closed="left"))
    lr_schedule: str = parameter("linear", Options(*LR_SCHEDULES))
    gradient_accumulation_steps: int = parameter(1, Interval(Integral, 1, None))
    max_epochs: int = parameter(5, Interval(Integral, 1, None))
    batch_size: int = parameter(32, Interval(Integral, 1, None))
    max_length: int = parameter(128, Interval(Integral, 2, None))
    device: str = parameter("auto", STRING)
    random_state: int | None = parameter(None, *RANDOM_STATE)
    verbose: int = parameter(0, Interval(Integral, 0, 2))
    text_column: str = parameter("text", STRING)
    task_column: str = parameter("task", STRING)
    handle_unknown_task: str = parameter("error", Options(*UNKNOWN_TASK_MODES))
    unknown_task_threshold: float = parameter(0.0, Interval(Real, 0, 1, closed="both"))
    route_top_k: int = parameter(2, Interval(Integral, 1, None))
    route_temperature: float = parameter(1.0, Interval(Real, 0, None, closed="neither"))
    early_stopping: bool = parameter(False, Options(False, True))
    validation_fraction: float = parameter(0.1, Interval(Real, 0, 1, closed="neither"))
    n_iter_no_change: int = parameter(3, Interval(Integral, 1, None))
    tol: float = parameter(1e-4, Interval(Real, 0, None))
    validation_scoring: str = parameter("loss", Options("loss", "score"))
    embed_backbone: bool = parameter(False, Options(False, True))
    group_by_length: bool = parameter(False, Options(False, True))
    merged_inference: bool = parameter(True, Options(False, True))
    gradient_checkpointing: bool = parameter(False, Options(False, True))
    torch_compile: bool = parameter(False, Options(False, True))
    n_devices: int = parameter(1, Interval(Integral, 1, None))
    distributed_backend: str = parameter("auto", Options(*BACKENDS))
    trust_remote_code: bool = parameter(False, Options(False, True))
    warm_start: bool = parameter(False, Options(False, True))
    checkpoint_dir: str | os.PathLike | None = parameter(None, NONE, PATH)
    checkpoint_every: int | None = parameter(None, NONE, Interval(Integral, 1, None))
    callbacks: list | None = parameter(None, NONE, CALLBACK_LIST)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        register(cls)  # found by name when a saved folder is loaded

    def _skills(self, n_tasks: int, **method: Any) -> SkillConfig:
        """A SkillConfig with the common parameters filled in and the method's own given."""
        return SkillConfig(n_tasks=n_tasks, rank=self.rank, alpha=self.alpha, dropout=self.dropout, **method)

    # ------------------------------------------------------------- validation
    def _validate_params(self) -> None:
        validate_parameters(self, parameter_constraints(self))
        if self.text_column == self.task_column:
            raise ValueError(
                f"text_column and task_column are both {self.text_column!r}; name the two different columns of X."
            )
        if self.checkpoint_dir is not None:
            check_folder_path(self.checkpoint_dir, "checkpoint_dir")
        check_target_pattern(self.target_modules)
        check_callbacks(self.callbacks)
        if self.quantization is not None and self.embed_backbone:
            raise ValueError(
                f"embed_backbone=True cannot pickle a quantized backbone (quantization={self.quantization!r}): it is "
                "quantized again from its original weights when unpickled. Set embed_backbone=False."
            )
        self._check_method_params()
        self._check_unknown_task_params()

    def _validated_inputs(self, X: Any) -> tuple[list[str], np.ndarray]:
        return check_texts_and_tasks(X, text_column=self.text_column, task_column=self.task_column)

    def _check_fitted(self) -> None:
        """Raise NotFittedError before ``fit``; check the parameters, which ``set_params`` may have changed since."""
        check_is_fitted(self, "network_")
        self._validate_params()

    def _task_indices(self, tasks: np.ndarray) -> np.ndarray:
        """Map given task ids to rows of the router.

        Unseen ids raise a ValueError naming them with ``handle_unknown_task="error"``,
        else map to ``UNKNOWN_TASK`` (-1), which prediction resolves (``_task_free/unknown_tasks.py``).
        """
        self._check_task_id_type(tasks, "predict")
        index, unknown = self._lookup_tasks(tasks)
        if unknown and self.handle_unknown_task == "error":
            raise ValueError(
                f"Unknown task id(s) {unknown[:10]} at predict time; {type(self).__name__} was fitted on "
                f"tasks {self.tasks_.tolist()[:20]}. Predict only for fitted tasks, learn new ones with "
                "adapt(), or set handle_unknown_task to 'infer' (the task is inferred from the text)"
                + (", 'route' (skills chosen by content)" if self._has_routed_skills() else "") + " or 'average'."
            )
        return index

    def _lookup_tasks(self, tasks: np.ndarray) -> tuple[np.ndarray, list]:
        """Each task id's row in ``tasks_`` (``UNKNOWN_TASK`` if absent) and the sorted absent ids."""
        lookup = {task: i for i, task in enumerate(self.tasks_.tolist())}
        unknown = sorted({task for task in tasks.tolist() if task not in lookup}, key=str)
        return np.asarray([lookup.get(task, UNKNOWN_TASK) for task in tasks.tolist()], dtype=np.int64), unknown

    @changes_model
    def set_params(self, **params: Any) -> "SkillEstimatorBase":
        """Set parameters, as scikit-learn's ``set_params`` does.

        Values are checked by the next ``fit`` or prediction. It changes the estimator,
        so it is refused with a :class:`~skillfit.ConcurrentUseError` while another
        thread predicts with or fits this estimator.

        Parameters
        ----------
        **params : dict
            Parameter names and their new values.

        Returns
        -------
        self : estimator
            The estimator itself.

        Raises
        ------
        ConcurrentUseError
            If another thread is inside a call on this estimator.

        See Also
        --------
        sklearn.base.BaseEstimator.get_params : The parameters and their values.
        skillfit.ConcurrentUseError : Raised for calls that overlap a change.

        References
        ----------
        .. [1] Buitinck et al. "API design for machine learning software: experiences from
           the scikit-learn project." ECML PKDD Workshop 2013 (arXiv:1309.0238).

        Examples
        --------
        >>> from skillfit import PolyClassifier
        >>> PolyClassifier().set_params(n_skills=4, rank=2).get_params()["n_skills"]
        4
        """
        return super().set_params(**params)

    # ------------------------------------------------------------------- fit
    @changes_model
    def fit(self, X: Any, y: Any, X_val: Any = None, y_val: Any = None, **fit_params: Any) -> "SkillEstimatorBase":
        """Train the skills, routers and head on ``(text, task)`` pairs.

        Every fit starts from the frozen backbone and fresh skills, unless
        ``warm_start=True`` and the estimator is fitted: then training continues
        from the fitted weights on the same tasks and labels.

        Parameters
        ----------
        X : DataFrame, list of (text, task) or array of shape (n_samples, 2)
            Texts and their task ids.
        y : array-like of shape (n_samples,)
            Targets: labels for the classifiers, target strings for the Seq2Seq
            estimators.
        X_val : DataFrame, list of (text, task) or array of shape (n_val, 2), optional
            Validation data, scored after every epoch (``history_``,
            ``validation_scores_``) and used for early stopping. Without it,
            ``early_stopping=True`` holds out ``validation_fraction`` of ``X``,
            stratified by task and label. Its tasks must be tasks of ``X``.
        y_val : array-like of shape (n_val,), optional
            Targets of ``X_val``; pass both or neither.
        **fit_params : dict
            Not supported: any keyword raises a TypeError. Sample weights are not
            supported either; repeat or drop rows to weigh examples.

        Returns
        -------
        object
            The fitted estimator itself (``self``).

        Raises
        ------
        ValueError
            If only one of ``X_val`` and ``y_val`` is given, or ``X_val`` has tasks
            the model does not train (those of ``X``, or of ``tasks_`` when warm-starting).
        TypeError
            If ``fit_params`` are given.
        FloatingPointError
            If the training loss becomes NaN or infinite (a learning rate too high);
            the estimator keeps its state from before the call.
        ConcurrentUseError
            If another thread is inside a call on this estimator.

        See Also
        --------
        skillfit.PolyClassifier.adapt : Learn new tasks from a few examples after ``fit``.
        skillfit.PolyClassifier.save_pretrained : Write the fitted estimator into a folder.
        skillfit.plotting.plot_history : Plot the training and validation history of a fit.
        skillfit.datasets.load_demo_tasks : Small multi-task classification data to fit on.

        Notes
        -----
        Ctrl-C (KeyboardInterrupt) during training keeps the weights of the best
        epoch so far and returns with a warning; before the first epoch ends, it
        leaves the estimator as it was and re-raises.

        With ``n_devices > 1``, the fit runs data-parallel on that many new processes
        and this estimator takes over the result; under ``torchrun`` or ``accelerate
        launch`` it trains in the running process group (``docs/scaling.md``).

        References
        ----------
        .. [1] Ponti, Sordoni, Bengio, Reddy. "Combining Parameter-efficient Modules for
           Task-level Generalisation." EACL 2023 (arXiv:2202.13914).

        Examples
        --------
        >>> from skillfit import PolyClassifier
        >>> from skillfit.datasets import make_tiny_backbone
        >>> X = [("a great film", "movies"), ("a dull plot", "movies"),
        ...      ("win a free prize now", "sms"), ("see you at noon", "sms")]
        >>> y = ["pos", "neg", "spam", "ham"]
        >>> clf = PolyClassifier(backbone=make_tiny_backbone(), max_epochs=1, random_state=0)
        >>> clf.fit(X, y)
        PolyClassifier(...)
        >>> clf.tasks_
        array(['movies', 'sms'], dtype=object)
        >>> clf.classes_
        array(['ham', 'neg', 'pos', 'spam'], dtype=object)
        >>> len(clf.history_)  # one entry per epoch
        1

        With validation data, every epoch is also scored on it:

        >>> X_val = [("a fine film", "movies"), ("free prize inside", "sms")]
        >>> clf.fit(X, y, X_val=X_val, y_val=["pos", "spam"])
        PolyClassifier(...)
        >>> sorted(clf.validation_task_scores_)
        ['movies', 'sms']
        """
        self._validate_params()
        if fit_params:
            raise TypeError(
                f"{type(self).__name__}.fit() takes X, y, X_val and y_val; got {sorted(fit_params)}. Sample "
                "weights are not supported: repeat or drop rows to weigh examples."
            )
        if self.checkpoint_every is not None and self.checkpoint_dir is None:
            warn_user("checkpoint_every is set but checkpoint_dir is None: no checkpoints are written. "
                          "Pass checkpoint_dir= to write them.", UserWarning)
        texts, tasks = self._validated_inputs(X)
        if (X_val is None) != (y_val is None):
            raise ValueError("Pass both X_val and y_val, or neither.")
        if self._starts_processes():
            estimator = self if self._warm() else clone(self)
            return self._run_on_new_processes(estimator, "fit", (X, y, X_val, y_val), resolve_device(self.device))
        with TrainingRun(self, "fit") as run:  # all or nothing: an error leaves the estimator as it was
            self._fit_new_model(run, texts, tasks, y, X_val, y_val)
        return self

    def _fit_new_model(
        self, run: TrainingRun, texts: list[str], tasks: np.ndarray, y: Any, X_val: Any, y_val: Any
    ) -> None:
        """Everything ``fit`` does after checking its inputs: data, network, training, summaries."""
        self.__dict__.pop("_partial_state", None)  # a fit ends any sequence of partial_fit passes
        warm = self._warm()
        if warm:
            task_index = self._warm_start_task_indices(tasks)
            targets = self._warm_start_targets(y, len(texts), task_index)
        else:
            targets = self._check_targets(y, len(texts))
        validation_data = self._validated_inputs(X_val) if X_val is not None else (None, None)
        seed = run.start({}, (texts, tasks, y, *validation_data, y_val), continues=warm)
        rng = np.random.default_rng(seed)
        if not warm:
            self.tasks_, task_index = np.unique(tasks, return_inverse=True)
        train, held_out, sized_for = self._split_for_validation(texts, task_index, targets, X_val, y_val, rng)
        with run.seeded():
            if warm:  # continue from the fitted weights, on a copy: an error leaves the model as it was
                run.continue_fitted_model()
            else:
                self._build_model(*sized_for)
                self.history_ = []
            encoded = self._encode(*train)
            validation = None
            if held_out is not None:
                validation = {"encoded": self._encode(*held_out), "tasks": held_out[1], "targets": held_out[2]}
            loop = run.training_loop(rng)
            with run.interruptible(needs_an_epoch=True, kept_note=". Call fit again to train fully.", resumable=warm):
                with self._compiled_for_training():
                    self._train(loop, encoded, validation)
        self._finish_fit(loop)
        if self.handle_unknown_task in INFERRING_MODES and getattr(self.network_, "task_identifier", None) is None:
            # The identifier reads the frozen backbone only: a warm fit keeps the one it has.
            self._train_task_identifier(texts, task_index)

    def _warm(self) -> bool:
        """Whether this ``fit`` continues the fitted model (``warm_start=True`` on a fitted estimator)."""
        if not (self.warm_start and hasattr(self, "network_")):
            return False
        if not self._supports_warm_start:
            raise ValueError(
                f"{type(self).__name__} cannot continue a fit (warm_start=True): its stages convert the network. "
                "Use warm_start=False, or adapt() for new tasks."
            )
        fitted_with = getattr(self, "_fitted_params", None)
        if fitted_with is not None:
            now = self.get_params(deep=False)
            changed = [key for key in now if key not in WARM_START_ADJUSTABLE and key in fitted_with
                       and not _same_value(now[key], fitted_with[key])]
            if changed:
                shown = "; ".join(f"{key}: {fitted_with[key]!r} at fit, {now[key]!r} now" for key in changed[:5])
                raise ValueError(
                    f"warm_start=True continues the fitted model, but parameters that shape it changed ({shown}). "
                    "Set them back, or set warm_start=False to fit a new model."
                )
        return True

    def _warm_start_task_indices(self, tasks: np.ndarray) -> np.ndarray:
        """Rows of ``tasks_`` for a warm-started fit, which may not bring new tasks."""
        return self._fitted_task_indices(
            tasks, "fit", "warm_start=True continues the fitted tasks, but X has new task(s) {unknown}; learn them "
            "with adapt(), or set warm_start=False to fit from scratch.",
        )

    def _fitted_task_indices(self, tasks: np.ndarray, action: str, refusal: str) -> np.ndarray:
        """Rows of ``tasks_`` for task ids that must all be fitted; a ValueError ``refusal`` (with ``{unknown}``) if not."""
        self._check_task_id_type(tasks, action)
        index, unknown = self._lookup_tasks(tasks)
        if unknown:
            raise ValueError(refusal.format(unknown=unknown[:10]))
        return index

    def _training_loop(
        self, rng: np.random.Generator, checkpoints: FitCheckpoints | None = None, call: str = "fit"
    ) -> TrainingLoop:
        """A :class:`TrainingLoop` over ``network_`` with this estimator's settings, hooks and callbacks.

        ``rng`` shuffles; ``call`` names the call for the callbacks. In a process group
        of several ranks, a :class:`~._training.distributed.DataParallelLoop`.
        """
        history = self.__dict__.setdefault("history_", [])  # estimators saved before history_ existed
        data_parallel = rank_and_world()[1] > 1
        extra = {"loss_units": self._loss_units} if data_parallel else {}
        return (DataParallelLoop if data_parallel else TrainingLoop)(
            self.network_,
            **extra,
            settings=TrainingSettings.from_params(self.get_params(deep=False)),
            make_batch=self._make_batch,
            batch_loss=self._batch_loss,
            score_validation=self._validation_scores,
            rng=rng,
            history=history,
            name=type(self).__name__,
            is_router=self._is_router_parameter,
            checkpoints=checkpoints,
            callbacks=CallbackList(list(self.callbacks or []), self, call, history),  # checked by _validate_params
        )

    def _finish_fit(self, loop: TrainingLoop) -> None:
        """Summaries of ``history_`` and the introspection attributes, once training is over."""
        self._fitted_params = self.get_params(deep=False)  # what a warm start must keep (see _warm)
        self.loss_curve_ = [record["loss"] for record in self.history_]
        self.n_iter_ = len(self.history_)
        self.n_devices_ = rank_and_world()[1]
        scores = [record["validation_score"] for record in self.history_ if "validation_score" in record]
        self.validation_scores_ = np.asarray(scores, dtype=float)
        self.best_validation_score_ = loop.best_score
        self.validation_task_scores_ = None if loop.best_score is None else loop.kept_task_scores
        self._set_routing_attributes()
        self._attach_routing_prototypes()
        self._start_prediction_reports()

    
def _same_value(first: Any, second: Any) -> bool:
    """Parameter equality that also holds for numpy scalars and arrays (``rank=np.int64(8)`` is ``8``)."""
    try:
        return bool(np.all(first == second)) if first is not None and second is not None else first is second
    except (TypeError, ValueError):
        return first is second
