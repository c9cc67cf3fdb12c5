"""The shared base of every skillfit estimator: validation, the training chain, devices.

The chain follows skorch: ``fit`` -> ``_fit_loop`` -> ``_run_epoch`` -> ``_train_step``,
each overridable. Subclasses (classifier, seq2seq) say how to check targets, build the
network and compute a batch's loss; method classes only say which skill configuration
they build (:meth:`_skill_config`).
"""

from __future__ import annotations

import copy
import logging
import os
import sys
import time
import warnings
from contextlib import contextmanager, nullcontext
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

if TYPE_CHECKING:
    import pandas as pd

from .._inputs import check_texts_and_tasks
from ._params import estimator_parameters, parameter, parameter_constraints
from ._networks import pad_sequences
from .._validation import (
    NONE,
    RANDOM_STATE,
    STRING,
    Interval,
    Options,
    StringList,
    validate_parameters,
)
from ..backbones import (
    DEFAULT_BACKBONE,
    Backbone,
    default_target_modules,
    load_backbone,
    load_generator,
    resolve_device,
)
from ._persistence import load_folder, network_payload, restore_network, save_folder
from ._validation_split import stratified_split
from ..skills import UNKNOWN_TASK, SkillConfig, inject_skills, routing_weights, skill_layers

# Global gradient-norm clip; fixed, as in most LoRA recipes.
MAX_GRAD_NORM = 1.0
ADAPT_MODES = ("routing", "average", "all")
# Width, in tokens, of the length buckets of group_by_length.
LENGTH_BUCKET = 8
# Batches per pool that group_by_length sorts by length: more, less padding; fewer, more mixed batches.
LENGTH_POOL_BATCHES = 50


@contextmanager
def _quiet_libraries(verbose: int) -> Iterator[None]:
    """Below ``verbose=2``, silence transformers' logs, progress bars and warnings.

    Only our own lines are printed at ``verbose=1``; everything shows at ``verbose=2``.
    """
    if verbose >= 2:
        yield
        return
    from transformers.utils import logging as hf_logging

    previous_level = hf_logging.get_verbosity()
    bars_were_enabled = hf_logging.is_progress_bar_enabled()
    hub_logger = logging.getLogger("huggingface_hub")
    previous_hub_level = hub_logger.level
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    hub_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            for module in ("transformers", "huggingface_hub", "torch"):
                warnings.filterwarnings("ignore", module=module)
            yield
    finally:
        hf_logging.set_verbosity(previous_level)
        if bars_were_enabled:
            hf_logging.enable_progress_bar()
        hub_logger.setLevel(previous_hub_level)


@contextmanager
def _reproducible_torch(seed: int) -> Iterator[None]:
    """Seed torch and use deterministic kernels inside; restore the caller's RNG states and mode outside.

    Deterministic kernels matter on CPU too: with two threads, two fits of MiniLM with
    the same seed drifted apart by ~1e-8 in the loss of the second epoch (some kernels
    reduce in a thread-dependent order); in deterministic mode they match bit for bit,
    at no measurable cost.
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    deterministic, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def _resolve_seed(random_state: int | None) -> int:
    if random_state is None:
        # Fresh OS entropy: never reads or advances numpy's global RNG.
        return int(np.random.SeedSequence().generate_state(1)[0])
    return int(random_state)


def _autocast(device: torch.device):
    """bf16 autocast on CUDA devices that support it, a no-op elsewhere."""
    enabled = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def _cpu_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``module`` whose tensors live on the CPU, without a device-side copy."""
    memo: dict[int, Any] = {}
    for tensor in list(module.parameters()) + list(module.buffers()):
        cpu = tensor.detach().to("cpu")
        memo[id(tensor)] = torch.nn.Parameter(cpu, tensor.requires_grad) if isinstance(tensor, torch.nn.Parameter) else cpu
    return copy.deepcopy(module, memo)


class TrainingInterrupted(KeyboardInterrupt):
    """A KeyboardInterrupt during training, after the weights were put back to a consistent state.

    Attributes
    ----------
    kept : str
        Which weights the model holds now (e.g. ``"epoch 3"``).
    losses : list of float
        Mean losses of the epochs that completed in the interrupted loop.
    """

    def __init__(self, kept: str, losses: list[float]) -> None:
        super().__init__(kept)
        self.kept, self.losses = kept, losses


class _WeightSnapshot:
    """A copy of some parameters' values, to put back later (best epoch, interrupts)."""

    def __init__(self, params: list[torch.nn.Parameter], description: str) -> None:
        self.description = description
        self._pairs = [(param, param.detach().clone()) for param in params]

    def restore(self) -> None:
        with torch.no_grad():
            for param, value in self._pairs:
                param.copy_(value)


@estimator_parameters
class SkillEstimatorBase(BaseEstimator):
    """Common parameters and the training loop of skillfit estimators.

    Not meant to be used directly: use a method class such as
    :class:`~skillfit.CPolyClassifier`. Parameters are dataclass fields declared with
    :func:`parameter`, so each one's default and constraints stand in one place and
    ``__init__`` only stores them.
    """

    backbone: str = parameter(DEFAULT_BACKBONE, STRING)
    target_modules: list[str] | str | None = parameter(None, NONE, StringList(), STRING)
    rank: int = parameter(8, Interval(Integral, 1, None))
    alpha: float = parameter(16.0, Interval(Real, 0, None, closed="neither"))
    dropout: float = parameter(0.0, Interval(Real, 0, 1, closed="left"))
    learning_rate: float = parameter(2e-3, Interval(Real, 0, None, closed="neither"))
    router_learning_rate: float = parameter(0.05, Interval(Real, 0, None, closed="neither"))
    weight_decay: float = parameter(0.0, Interval(Real, 0, None))
    warmup_fraction: float = parameter(0.1, Interval(Real, 0, 1, closed="left"))
    max_epochs: int = parameter(5, Interval(Integral, 1, None))
    batch_size: int = parameter(32, Interval(Integral, 1, None))
    max_length: int = parameter(128, Interval(Integral, 2, None))
    device: str = parameter("auto", STRING)
    random_state: int | None = parameter(None, *RANDOM_STATE)
    verbose: int = parameter(0, Interval(Integral, 0, 2))
    text_column: str = parameter("text", STRING)
    task_column: str = parameter("task", STRING)
    handle_unknown_task: str = parameter("error", Options("error", "average"))
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

    # Which loader reads the backbone: "model" (hidden states) or "generator" (an LM head too).
    _backbone_kind = "model"

    # ------------------------------------------------------------------ hooks
    def _skill_config(self, n_tasks: int) -> SkillConfig:
        """The skill inventory this method puts in every adapted layer."""
        raise NotImplementedError

    def _skills(self, n_tasks: int, **method: Any) -> SkillConfig:
        """A SkillConfig with the common parameters filled in and the method's own given."""
        return SkillConfig(n_tasks=n_tasks, rank=self.rank, alpha=self.alpha, dropout=self.dropout, **method)

    def _check_method_params(self) -> None:
        """Cross-parameter checks of a method (beyond the per-parameter table)."""

    def _check_targets(self, y: Any, n_samples: int) -> Any:
        raise NotImplementedError

    def _build_network(self, backbone: Backbone, skill_config: SkillConfig, targets: Any, task_index: np.ndarray) -> torch.nn.Module:
        raise NotImplementedError

    def _task_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean loss of the batch's predictions (what validation scores with ``"loss"``)."""
        raise NotImplementedError

    def _make_batch(self, indices: np.ndarray, encoded: dict[str, Any]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # ------------------------------------------------------------- validation
    def _validate_params(self) -> None:
        validate_parameters(self, parameter_constraints(self))
        self._check_method_params()

    def _validated_inputs(self, X: Any) -> tuple[list[str], np.ndarray]:
        return check_texts_and_tasks(X, text_column=self.text_column, task_column=self.task_column)

    def _task_indices(self, tasks: np.ndarray) -> np.ndarray:
        """Map task ids to rows of the router.

        Unknown tasks raise a ValueError naming them, or map to ``UNKNOWN_TASK`` (-1,
        average routing, no exclusive skills) with ``handle_unknown_task="average"``.
        """
        index, unknown = self._lookup_tasks(tasks)
        if unknown and self.handle_unknown_task == "error":
            raise ValueError(
                f"Unknown task id(s) {unknown[:10]} at predict time; {type(self).__name__} was fitted on "
                f"tasks {self.tasks_.tolist()[:20]}. Predict only for fitted tasks, learn new ones with "
                "adapt(), or set handle_unknown_task='average' to use the average routing."
            )
        return index

    def _lookup_tasks(self, tasks: np.ndarray) -> tuple[np.ndarray, list]:
        """Each task id's row in ``tasks_`` (``UNKNOWN_TASK`` if absent) and the sorted absent ids."""
        lookup = {task: i for i, task in enumerate(self.tasks_.tolist())}
        unknown = sorted({task for task in tasks.tolist() if task not in lookup}, key=str)
        return np.asarray([lookup.get(task, UNKNOWN_TASK) for task in tasks.tolist()], dtype=np.int64), unknown

    # ------------------------------------------------------------------- fit
    def fit(self, X: Any, y: Any, X_val: Any = None, y_val: Any = None) -> "SkillEstimatorBase":
        """Train the skills, routers and head on ``(text, task)`` pairs.

        Parameters
        ----------
        X : DataFrame, list of (text, task) or array of shape (n_samples, 2)
            Texts and their task ids.
        y : array-like of shape (n_samples,)
            Targets.
        X_val, y_val : optional
            Validation data, scored after every epoch (``history_``,
            ``validation_scores_``) and used for early stopping. Without them,
            ``early_stopping=True`` holds out ``validation_fraction`` of ``X``,
            stratified by task and label.

        Returns
        -------
        self

        Notes
        -----
        Ctrl-C (KeyboardInterrupt) during training keeps the weights of the best
        epoch so far and returns with a warning; before the first epoch ends, it
        leaves the estimator as it was and re-raises.
        """
        self._validate_params()
        texts, tasks = self._validated_inputs(X)
        if (X_val is None) != (y_val is None):
            raise ValueError("Pass both X_val and y_val, or neither.")
        previous_state = dict(self.__dict__)
        try:
            self._fit_new_model(texts, tasks, y, X_val, y_val)
        except BaseException:
            # Never half-updated: an error, or Ctrl-C before the first epoch ends, leaves the
            # estimator as it was before fit (unfitted, or the previous model).
            self.__dict__.clear()
            self.__dict__.update(previous_state)
            raise
        return self

    def _fit_new_model(self, texts: list[str], tasks: np.ndarray, y: Any, X_val: Any, y_val: Any) -> None:
        """Everything ``fit`` does after checking its inputs: set up, train, summarise."""
        targets = self._check_targets(y, len(texts))
        seed = _resolve_seed(self.random_state)
        rng = np.random.default_rng(seed)
        self.tasks_, task_index = np.unique(tasks, return_inverse=True)
        validation = None
        if X_val is not None:
            val_texts, val_tasks = self._validated_inputs(X_val)
            val_index = self._validation_task_indices(val_tasks)
            val_targets = self._check_validation_targets(y_val, len(val_texts))
            structure_targets = self._concatenate_targets(targets, val_targets)
            structure_tasks = np.concatenate([task_index, val_index])
        else:
            structure_targets, structure_tasks = targets, task_index
            if self.early_stopping:
                keys = self._stratification_keys(task_index, targets)
                train_rows, val_rows = stratified_split(keys, self.validation_fraction, rng)
                val_texts, val_index = [texts[i] for i in val_rows], task_index[val_rows]
                val_targets = self._subset_targets(targets, val_rows)
                texts, task_index = [texts[i] for i in train_rows], task_index[train_rows]
                targets = self._subset_targets(targets, train_rows)
        with _quiet_libraries(self.verbose), _reproducible_torch(seed):
            self.device_ = resolve_device(self.device)
            backbone = self._load_backbone()
            self._backbone_reference = {
                "name": self.backbone, "revision": backbone.revision, "sha256": backbone.weights_sha256(),
            }
            self.tokenizer_ = backbone.tokenizer
            skill_config = self._skill_config(len(self.tasks_))
            self.network_ = self._build_network(backbone, skill_config, structure_targets, structure_tasks).to(self.device_)
            self.n_trainable_params_ = sum(p.numel() for p in self.network_.parameters() if p.requires_grad)
            self._configure_backbone(self.network_.backbone)
            encoded = self._encode(texts, task_index, targets)
            if self.early_stopping or X_val is not None:
                validation = {
                    "encoded": self._encode(val_texts, val_index, val_targets), "tasks": val_index, "targets": val_targets,
                }
            self.history_ = []
            self._best_validation = None
            try:
                with self._compiled_for_training():
                    self._train(encoded, rng, validation)
            except TrainingInterrupted as interrupt:
                if not self.history_:
                    raise KeyboardInterrupt from interrupt
                warnings.warn(
                    f"{type(self).__name__}.fit was interrupted after {len(self.history_)} epoch(s); it keeps "
                    f"the weights of {interrupt.kept}. Call fit again to train fully.",
                    UserWarning,
                    stacklevel=2,
                )
        self._finish_fit()

    def _configure_backbone(self, model: torch.nn.Module) -> None:
        """Turn on gradient checkpointing in the backbone when asked (it acts in training mode only)."""
        if not self.gradient_checkpointing:
            return
        if not getattr(model, "supports_gradient_checkpointing", False):
            raise ValueError(
                f"gradient_checkpointing=True, but {type(model).__name__} does not support gradient "
                "checkpointing; set gradient_checkpointing=False."
            )
        # Non-reentrant checkpointing needs no input that requires grad (the backbone is frozen).
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    @contextmanager
    def _compiled_for_training(self) -> Iterator[None]:
        """With ``torch_compile``, the backbone runs through ``torch.compile`` while training.

        Prediction stays eager (merged weights make it as cheap as the bare backbone),
        and nothing compiled is kept on the estimator, so pickling is unaffected.
        """
        if not self.torch_compile:
            yield
            return
        backbone = self.network_.backbone
        backbone.compile(dynamic=True)
        try:
            yield
        finally:
            backbone._compiled_call_impl = None

    def _train(self, encoded: dict[str, Any], rng: np.random.Generator, validation: dict | None) -> None:
        """Run the training of ``fit``; methods with stages (PEMT) override it."""
        self._fit_loop(encoded, rng, self.max_epochs, validation=validation)

    def _finish_fit(self) -> None:
        """Summaries of ``history_`` and the introspection attributes, once training is over."""
        self.loss_curve_ = [record["loss"] for record in self.history_]
        self.n_iter_ = len(self.history_)
        scores = [record["validation_score"] for record in self.history_ if "validation_score" in record]
        self.validation_scores_ = np.asarray(scores, dtype=float)
        best = self._best_validation
        self.best_validation_score_ = None if best is None else best["score"]
        self.validation_task_scores_ = None if best is None else best["kept_task_scores"]
        del self._best_validation
        self._set_routing_attributes()

    def _load_backbone(self, revision: str | None = None) -> Backbone:
        loader = load_backbone if self._backbone_kind == "model" else load_generator
        return loader(self.backbone, self.device_, revision=revision)

    # -------------------------------------------------------------- validation data
    def _validation_task_indices(self, tasks: np.ndarray) -> np.ndarray:
        index, unknown = self._lookup_tasks(tasks)
        if unknown:
            raise ValueError(
                f"X_val has task id(s) {unknown[:10]} that X does not have; validate only on the tasks you train."
            )
        return index

    def _check_validation_targets(self, y_val: Any, n_samples: int) -> Any:
        """``y_val`` encoded as ``fit`` encodes ``y``."""
        raise NotImplementedError

    def _stratification_keys(self, task_index: np.ndarray, targets: Any) -> np.ndarray:
        """One key per row; the held-out validation rows keep the proportions of each key."""
        return task_index

    @staticmethod
    def _subset_targets(targets: Any, rows: np.ndarray) -> Any:
        return targets[rows] if isinstance(targets, np.ndarray) else [targets[i] for i in rows]

    @staticmethod
    def _concatenate_targets(first: Any, second: Any) -> Any:
        return np.concatenate([first, second]) if isinstance(first, np.ndarray) else list(first) + list(second)

    def _validation_scores(self, validation: dict[str, Any]) -> tuple[float, dict[Any, float]]:
        """The score over all validation rows and per task (higher is better).

        ``validation_scoring="loss"`` gives the negative mean loss (per example for
        classifiers, per target token for text-to-text); ``"score"`` gives what
        :meth:`score` reports (accuracy, ROUGE-L or exact match).
        """
        encoded, tasks = validation["encoded"], validation["tasks"]
        task_ids = self.tasks_.tolist()
        per_task: dict[Any, float] = {}
        self.network_.eval()
        if self.validation_scoring == "score":
            predictions = self._predict_encoded(encoded)
            for task in np.unique(tasks):
                rows = np.flatnonzero(tasks == task)
                per_task[task_ids[task]] = self._prediction_score(
                    self._subset_targets(validation["targets"], rows), self._subset_targets(predictions, rows)
                )
            return self._prediction_score(validation["targets"], predictions), per_task
        sums: dict[int, list[float]] = {}
        with torch.no_grad(), _autocast(self.device_), self._inference():
            for rows in self._iter_eval_batches(encoded):  # one task per batch
                batch = self._make_batch(rows, encoded)
                units = self._loss_units(batch)
                task_sums = sums.setdefault(int(tasks[rows[0]]), [0.0, 0.0])
                task_sums[0] += float(self._task_loss(batch)) * units
                task_sums[1] += units
        for task, (loss, units) in sums.items():
            per_task[task_ids[task]] = -loss / units
        total_loss, total_units = map(sum, zip(*sums.values()))
        return -total_loss / total_units, per_task

    def _loss_units(self, batch: dict[str, torch.Tensor]) -> int:
        """What the batch loss averages over: examples (classifiers) or target tokens (text-to-text)."""
        return len(batch["input_ids"])

    def _predict_encoded(self, encoded: dict[str, Any]) -> Any:
        """Predictions for encoded rows, comparable with the encoded targets."""
        raise NotImplementedError

    def _prediction_score(self, targets: Any, predictions: Any) -> float:
        raise NotImplementedError

    def _initial_task_descriptions(self, backbone: Backbone) -> torch.Tensor | None:
        """Task-description vectors for methods that use them (PEMT); None otherwise."""
        return None

    def _target_modules(self, backbone: Backbone):
        return self.target_modules if self.target_modules is not None else default_target_modules(backbone.config)

    def _inject(self, backbone: Backbone, skill_config: SkillConfig):
        return inject_skills(backbone.model, skill_config, self._target_modules(backbone))

    def _encode(self, texts: list[str], task_index: np.ndarray, targets: Any) -> dict[str, Any]:
        encoding = self.tokenizer_(texts, truncation=True, max_length=self.max_length)
        return {"input_ids": encoding["input_ids"], "tasks": task_index, "targets": targets}

    def _pad(
        self, sequences: list[list[int]], *, left: bool = False, pad_value: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pad id lists into ``(ids, attention_mask)`` on the fitted device (right, or left for generation)."""
        pad_value = self.tokenizer_.pad_token_id if pad_value is None else pad_value
        ids, attention_mask = pad_sequences(sequences, pad_value, left=left)
        return ids.to(self.device_, non_blocking=True), attention_mask.to(self.device_, non_blocking=True)

    def _make_optimizer(
        self, n_steps: int, weight_decay: float | None = None
    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        """AdamW with the router logits in their own group (own learning rate, no decay)."""
        weight_decay = self.weight_decay if weight_decay is None else weight_decay
        router_params, other_params = [], []
        for name, param in self.network_.named_parameters():
            if param.requires_grad:
                (router_params if self._is_router_parameter(name) else other_params).append(param)
        groups = [{"params": other_params, "lr": self.learning_rate, "weight_decay": weight_decay}]
        if router_params:
            groups.append({"params": router_params, "lr": self.router_learning_rate, "weight_decay": 0.0})
        fused = self.device_.type == "cuda"
        optimizer = torch.optim.AdamW(groups, fused=fused)
        warmup = int(self.warmup_fraction * n_steps)

        def linear_warmup_then_decay(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return max(0.0, (n_steps - step) / max(1, n_steps - warmup))

        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_then_decay)

    def _is_router_parameter(self, name: str) -> bool:
        """Whether a trainable parameter takes ``router_learning_rate`` (routing logits)."""
        return name.endswith(("routing_logits", "exclusive_logits"))

    def _fit_loop(
        self,
        encoded: dict[str, Any],
        rng: np.random.Generator,
        n_epochs: int,
        *,
        weight_decay: float | None = None,
        stage: str = "",
        validation: dict[str, Any] | None = None,
    ) -> list[float]:
        """Train the parameters that require grad for ``n_epochs``; return each epoch's mean loss.

        Appends one record per epoch to ``history_``. With validation data, scores it
        after each epoch and, with ``early_stopping``, stops after ``n_iter_no_change``
        epochs without an improvement of more than ``tol`` and restores the best
        epoch's weights. A KeyboardInterrupt restores the best (or last complete)
        epoch's weights and is re-raised as :class:`TrainingInterrupted`.
        """
        n_samples = len(encoded["input_ids"])
        n_batches = -(-n_samples // self.batch_size)
        optimizer, scheduler = self._make_optimizer(n_epochs * n_batches, weight_decay)
        trainable = [param for group in optimizer.param_groups for param in group["params"]]
        label = f"[{type(self).__name__}{' ' + stage if stage else ''}]"
        losses: list[float] = []
        kept = _WeightSnapshot(trainable, "before training" if not stage else f"the start of {stage}")
        best: dict[str, Any] | None = None
        last_task_scores = None
        epochs_without_improvement = 0
        try:
            for epoch in range(n_epochs):
                start = time.perf_counter()
                batches = self._training_batches(encoded, rng)
                epoch_loss = self._run_epoch(batches, encoded, optimizer, scheduler, f"epoch {epoch + 1}/{n_epochs}")
                record: dict[str, Any] = {"epoch": epoch + 1, "loss": epoch_loss}
                if stage:
                    record["stage"] = stage
                name = f"epoch {epoch + 1}" + (f" of {stage}" if stage else "")
                if validation is not None:
                    score, last_task_scores = self._validation_scores(validation)
                    record["validation_score"] = score
                    if best is None or score < best["score"] + self.tol:
                        epochs_without_improvement = 0 if best is None else epochs_without_improvement + 1
                    else:
                        epochs_without_improvement = 0
                    if best is None or score > best["score"]:
                        best = {"score": score, "task_scores": last_task_scores, "snapshot": _WeightSnapshot(trainable, name)}
                    kept = best["snapshot"]
                else:
                    kept = _WeightSnapshot(trainable, name)
                record["time"] = time.perf_counter() - start
                self.history_.append(record)
                losses.append(epoch_loss)
                if self.verbose >= 1:
                    shown = f"  validation {record['validation_score']:.4f}" if validation is not None else ""
                    print(f"{label} epoch {epoch + 1}/{n_epochs}  loss {epoch_loss:.4f}{shown}  ({record['time']:.1f}s)", flush=True)
                if self.early_stopping and validation is not None and epochs_without_improvement >= self.n_iter_no_change:
                    if self.verbose >= 1:
                        print(f"{label} early stop: no improvement for {epochs_without_improvement} epochs; "
                              f"keeping {best['snapshot'].description}", flush=True)
                    break
        except KeyboardInterrupt as error:
            kept.restore()
            self._keep_validation(best, best["task_scores"] if best is not None else None)
            raise TrainingInterrupted(kept.description, losses) from error
        finally:
            # Free gradients and Adam's moments now rather than at the next garbage collection.
            optimizer.zero_grad(set_to_none=True)
            optimizer.state.clear()
        if best is not None and self.early_stopping:
            best["snapshot"].restore()
            self._keep_validation(best, best["task_scores"])
        elif best is not None:
            self._keep_validation(best, last_task_scores)
        return losses

    def _training_batches(self, encoded: dict[str, Any], rng: np.random.Generator) -> list[np.ndarray]:
        """One epoch's batches of row indices, each sorted by task.

        With ``group_by_length``, rows are shuffled, cut into pools of
        ``LENGTH_POOL_BATCHES`` batches,
        sorted by length (in buckets of 8 tokens, random within a bucket) within each
        pool and cut into batches whose order is then shuffled: batches hold texts of
        similar length (little padding) and stay random. Sorting a batch's rows by
        task lets each skill layer apply one low-rank product per task to a
        contiguous slice.
        """
        n_samples, size = len(encoded["input_ids"]), self.batch_size
        order = rng.permutation(n_samples)
        if self.group_by_length:
            # Coarse buckets of LENGTH_BUCKET tokens, random within a bucket: sorting by exact
            # length would put texts that differ by one token apart, and where length
            # follows the label (a keyword added, a longer spam message) batches would
            # hold one label each.
            buckets = np.asarray([len(ids) for ids in encoded["input_ids"]]) // LENGTH_BUCKET
            pool = size * LENGTH_POOL_BATCHES
            order = np.concatenate([
                chunk[np.lexsort((rng.random(len(chunk)), buckets[chunk]))]
                for chunk in (order[i : i + pool] for i in range(0, n_samples, pool))
            ])
        batches = [order[i : i + size] for i in range(0, n_samples, size)]
        if self.group_by_length:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        tasks = encoded["tasks"]
        return [batch[np.argsort(tasks[batch], kind="stable")] for batch in batches]

    def _keep_validation(self, best: dict[str, Any] | None, kept_task_scores: dict | None) -> None:
        if best is not None:
            self._best_validation = {"score": best["score"], "kept_task_scores": kept_task_scores}

    def _run_epoch(self, batches, encoded, optimizer, scheduler, description: str) -> float:
        self.network_.train()
        progress = None
        if self.verbose >= 2:
            from tqdm.auto import tqdm

            progress = tqdm(total=len(batches), desc=description, file=sys.stderr)
        total, count = 0.0, 0
        for indices in batches:
            batch = self._make_batch(indices, encoded)
            loss = self._train_step(batch, optimizer, scheduler)
            total += loss * len(indices)
            count += len(indices)
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{total / count:.4f}")
        if progress is not None:
            progress.close()
        return total / count

    def _batch_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training objective of a batch: the task loss plus any regulariser of the method."""
        return self._task_loss(batch)

    def _train_step(self, batch, optimizer, scheduler) -> float:
        optimizer.zero_grad(set_to_none=True)
        # The task ids stay set through backward: with gradient checkpointing, skill layers run again there.
        with self.network_.context.tasks(batch["tasks"]):
            with _autocast(self.device_):
                loss = self._batch_loss(batch)
            loss.backward()
        trainable = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
        optimizer.step()
        scheduler.step()
        return float(loss.detach())

    # -------------------------------------------------------------- new tasks
    def adapt(self, X: Any, y: Any, *, mode: str = "routing", max_epochs: int | None = None) -> "SkillEstimatorBase":
        """Learn new tasks from a few examples after ``fit``, keeping what was learned.

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
        self
        """
        self._check_fitted()
        if mode not in ADAPT_MODES:
            raise ValueError(f"mode must be one of {ADAPT_MODES}, got {mode!r}.")
        if max_epochs is not None and (isinstance(max_epochs, bool) or not isinstance(max_epochs, Integral) or max_epochs < 1):
            raise ValueError(f"max_epochs must be an int >= 1 or None, got {max_epochs!r}.")
        texts, tasks = self._validated_inputs(X)
        if tasks.dtype.kind != self.tasks_.dtype.kind:
            raise TypeError(
                f"{type(self).__name__} was fitted with {'integer' if self.tasks_.dtype.kind == 'i' else 'string'} "
                "task ids; adapt() needs task ids of the same type."
            )
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
        raw_targets = self._check_adapt_targets(y, len(texts))
        seed = _resolve_seed(self.random_state)
        with _quiet_libraries(self.verbose), _reproducible_torch(seed):
            n_old = len(self.tasks_)
            self.tasks_ = np.concatenate([self.tasks_, np.asarray(new_tasks, dtype=self.tasks_.dtype)])
            task_index = self._task_indices(tasks)
            targets, new_output_parameters = self._add_task_outputs(raw_targets, task_index, n_old)
            for _, layer in skill_layers(self.network_):
                layer.add_tasks(len(new_tasks), average=mode == "average")
            self._add_task_inputs(new_tasks)
            self.network_.to(self.device_)
            restore = self._freeze_for_adapt(mode, n_old, new_output_parameters)
            if not any(param.requires_grad for param in self.network_.parameters()):
                restore()
                raise ValueError(
                    f"adapt(mode={mode!r}) has nothing to train: {type(self).__name__} keeps no per-task "
                    "parameters and the new tasks bring no new labels. Use mode='all'."
                )
            self.__dict__.setdefault("history_", [])  # estimators saved before history_ existed
            try:
                encoded = self._encode(texts, task_index, targets)
                self.adapt_loss_curve_ = self._fit_loop(
                    encoded, np.random.default_rng(seed), max_epochs or self.max_epochs,
                    weight_decay=None if mode == "all" else 0.0, stage=f"adapt:{mode}",
                )
            except TrainingInterrupted as interrupt:
                self.adapt_loss_curve_ = interrupt.losses
                warnings.warn(
                    f"{type(self).__name__}.adapt was interrupted; it keeps the weights of {interrupt.kept}"
                    + (" and the fitted tasks are unchanged." if mode != "all" else "."),
                    UserWarning,
                    stacklevel=2,
                )
            finally:
                restore()
        self._set_routing_attributes()
        return self

    def _check_adapt_targets(self, y: Any, n_samples: int) -> Any:
        raise NotImplementedError

    def _add_task_outputs(
        self, raw_targets: Any, task_index: np.ndarray, n_old_tasks: int
    ) -> tuple[Any, list[torch.nn.Parameter]]:
        """Grow what the output side keeps per task and label.

        Returns the encoded targets and the output parameters created for new labels.
        """
        raise NotImplementedError

    def _add_task_inputs(self, new_tasks: list) -> None:
        """Grow what the input side keeps per task (PEMT's descriptions)."""

    def _freeze_for_adapt(self, mode: str, n_old_tasks: int, new_output_parameters: list[torch.nn.Parameter]):
        """Make only what ``mode`` trains require grad; return a function that undoes it.

        Per-task tensors stay trainable with the old tasks' rows masked out of the
        gradient (with no weight decay, AdamW then leaves them bit-identical).
        """
        requires_grad = {param: param.requires_grad for param in self.network_.parameters()}
        hooks = []
        if mode != "all":
            self.network_.requires_grad_(False)
            per_task = [p for _, layer in skill_layers(self.network_) for p in layer.per_task_parameters()]
            per_task += [p for p in (getattr(self.network_, "task_descriptions", None),) if p is not None and requires_grad[p]]
            for param in per_task:
                param.requires_grad_(True)
                hooks.append(param.register_hook(lambda grad, n=n_old_tasks: torch.cat([torch.zeros_like(grad[:n]), grad[n:]])))
            for param in new_output_parameters:
                param.requires_grad_(True)

        def restore() -> None:
            for handle in hooks:
                handle.remove()
            for param, flag in requires_grad.items():
                param.requires_grad_(flag)

        return restore

    def task_similarity(self) -> "pd.DataFrame":
        """Cosine similarity of the tasks' routing over all layers and heads.

        Returns
        -------
        DataFrame of shape (n_tasks, n_tasks)
            Indexed by ``tasks_`` on both axes; 1 on the diagonal.
        """
        import pandas as pd

        self._check_fitted()
        per_layer = getattr(self, "layer_gate_weights_", None) or self.layer_routing_weights_
        if not per_layer:
            raise ValueError(f"{type(self).__name__} has no learned routing to compare tasks with.")
        vectors = np.concatenate([weights.reshape(len(self.tasks_), -1) for weights in per_layer.values()], axis=1)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        unit = vectors / np.where(norms == 0, 1.0, norms)
        return pd.DataFrame(unit @ unit.T, index=self.tasks_, columns=self.tasks_)

    # ---------------------------------------------------------- introspection
    def _set_routing_attributes(self) -> None:
        per_layer = routing_weights(self.network_)
        self.layer_routing_weights_ = per_layer
        if per_layer:
            # Average over layers and heads: (n_tasks, n_shared).
            self.routing_weights_ = np.mean([w.mean(axis=1) for w in per_layer.values()], axis=0)
        else:
            n_shared = self._skill_config(len(self.tasks_)).n_shared
            self.routing_weights_ = np.ones((len(self.tasks_), n_shared))

    # ------------------------------------------------------------ saving, sharing
    def save_pretrained(
        self, path: str | os.PathLike, *, include_backbone: bool = False, scores: dict | None = None
    ) -> None:
        """Write the fitted estimator into a folder that :meth:`from_pretrained` reads.

        The folder holds a JSON config (parameters, fitted attributes, the structure
        of every skill layer, the backbone's name, revision and weight hash, library
        versions), the trained tensors as safetensors, and a ``README.md`` model card.
        Nothing in it is pickled.

        Parameters
        ----------
        path : str or path-like
            The folder; created if needed, files of the same names overwritten.
        include_backbone : bool, default=False
            Also write the frozen backbone (config, tokenizer, weights) into
            ``path/backbone``, so loading needs nothing else. By default the backbone
            is stored by reference and loaded by name, then checked against the hash.
        scores : dict, optional
            Scores to show in the model card, e.g. ``{"accuracy": {"task": 0.9}}``;
            validation scores of ``fit`` are shown when known.
        """
        self._check_fitted()
        save_folder(self, path, include_backbone, scores)

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, *, device: str | None = None, backbone: str | None = None
    ) -> "SkillEstimatorBase":
        """Load an estimator written by :meth:`save_pretrained`.

        Parameters
        ----------
        path : str or path-like
            The folder.
        device : str, optional
            Where to put the model (``"cpu"``, ``"cuda"``, ``"auto"``); the saved
            ``device`` parameter by default.
        backbone : str, optional
            Another location (hub id or folder) of the same backbone weights; the
            weights must hash to the saved SHA-256.

        Returns
        -------
        estimator
            Fitted, of the class that was saved.
        """
        return load_folder(cls, path, device, backbone)

    def export_peft(self, path: str | os.PathLike, *, task: Any = None, format: str = "lora") -> None:
        """Write a standard peft adapter that reproduces this estimator on the bare backbone.

        Parameters
        ----------
        path : str or path-like
            The adapter folder (``adapter_config.json``, ``adapter_model.safetensors``).
        task : task id
            With ``format="lora"``: the task whose routing and exclusive skills are
            folded into one LoRA (C-Poly stacks the shared and exclusive ranks).
        format : {"lora", "poly"}, default="lora"
            ``"poly"`` writes peft's POLY format with every task (Poly and Poly-S).

        Notes
        -----
        Classifiers also write ``skillfit_head.safetensors`` and
        ``skillfit_head.json`` (pooling, labels, the task's label mask): peft holds
        the backbone's adapter, the head reads its hidden states. See
        ``docs/saving.md``.
        """
        from ._peft_export import export_peft

        self._check_fitted()
        export_peft(self, path, task=task, format=format)

    # -------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        """Pickle the trained tensors on the CPU; the backbone by reference unless ``embed_backbone``."""
        state = super().__getstate__()
        network = state.get("network_")
        if network is None:
            return state
        if not self.embed_backbone and hasattr(self, "_backbone_reference"):
            payload = network_payload(self)
            # By reference only when every trained tensor is a skill, head or mask (not, e.g., a peft layer).
            if all(name in payload["state"] for name, param in network.named_parameters() if param.requires_grad):
                state = {key: value for key, value in state.items() if key not in ("network_", "tokenizer_")}
                state["_network_payload"] = payload
                return state
        if any(p.device.type != "cpu" for p in network.parameters()):
            state["network_"] = _cpu_copy(network)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        payload = state.pop("_network_payload", None)
        super().__setstate__(state)
        device = getattr(self, "device_", None)
        if device is not None and device.type == "cuda" and not torch.cuda.is_available():
            warnings.warn(
                f"{type(self).__name__} was fitted on {device}, but CUDA is not available here; "
                "it will predict on the CPU.",
                UserWarning,
                stacklevel=2,
            )
            self.device_ = device = torch.device("cpu")
        if payload is not None:
            with _quiet_libraries(getattr(self, "verbose", 0)):
                restore_network(self, payload, "the unpickled estimator")
        elif device is not None and device.type == "cuda":
            self.network_.to(device)

    def _check_fitted(self) -> None:
        check_is_fitted(self, "network_")

    def _iter_eval_batches(self, encoded: dict[str, Any]) -> Iterator[np.ndarray]:
        """Index batches for prediction: one task per batch, rows sorted by length (little padding).

        A batch of one task lets each skill layer fold that task's update into its
        weight (``merged_inference``).
        """
        tasks = np.asarray(encoded["tasks"])
        lengths = np.asarray([len(ids) for ids in encoded["input_ids"]])
        for task in np.unique(tasks):
            rows = np.flatnonzero(tasks == task)
            rows = rows[np.argsort(lengths[rows], kind="stable")]
            for start in range(0, len(rows), self.batch_size):
                yield rows[start : start + self.batch_size]

    def _inference(self):
        """The scope of a prediction pass: merged task weights when ``merged_inference``."""
        context = self.network_.context
        return context.merging() if self.merged_inference else nullcontext()
