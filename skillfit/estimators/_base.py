"""The shared base of every skillfit estimator: validation, the training chain, devices.

The chain follows skorch: ``fit`` -> ``_fit_loop`` -> ``_run_epoch`` -> ``_train_step``,
each overridable. Subclasses (classifier, seq2seq) say how to check targets, build the
network and compute a batch's loss; method classes only say which skill configuration
they build (:meth:`_skill_config`).
"""

from __future__ import annotations

import copy
import logging
import sys
import time
import warnings
from contextlib import contextmanager
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
from ..backbones import DEFAULT_BACKBONE, Backbone, default_target_modules, load_backbone, resolve_device
from ..skills import UNKNOWN_TASK, SkillConfig, inject_skills, routing_weights, skill_layers

# Global gradient-norm clip; fixed, as in most LoRA recipes.
MAX_GRAD_NORM = 1.0
ADAPT_MODES = ("routing", "average", "all")


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

    def _batch_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
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
        lookup = {task: i for i, task in enumerate(self.tasks_.tolist())}
        unknown = sorted({task for task in tasks.tolist() if task not in lookup}, key=str)
        if unknown and self.handle_unknown_task == "error":
            raise ValueError(
                f"Unknown task id(s) {unknown[:10]} at predict time; {type(self).__name__} was fitted on "
                f"tasks {self.tasks_.tolist()[:20]}. Predict only for fitted tasks, learn new ones with "
                "adapt(), or set handle_unknown_task='average' to use the average routing."
            )
        return np.asarray([lookup.get(task, UNKNOWN_TASK) for task in tasks.tolist()], dtype=np.int64)

    # ------------------------------------------------------------------- fit
    def fit(self, X: Any, y: Any) -> "SkillEstimatorBase":
        """Train the skills, routers and head on ``(text, task)`` pairs.

        Parameters
        ----------
        X : DataFrame, list of (text, task) or array of shape (n_samples, 2)
            Texts and their task ids.
        y : array-like of shape (n_samples,)
            Targets.

        Returns
        -------
        self
        """
        self._validate_params()
        texts, tasks = self._validated_inputs(X)
        targets = self._check_targets(y, len(texts))
        seed = _resolve_seed(self.random_state)
        with _quiet_libraries(self.verbose), _reproducible_torch(seed):
            self.device_ = resolve_device(self.device)
            backbone = self._load_backbone()
            self.tokenizer_ = backbone.tokenizer
            self.tasks_, task_index = np.unique(tasks, return_inverse=True)
            skill_config = self._skill_config(len(self.tasks_))
            self.network_ = self._build_network(backbone, skill_config, targets, task_index).to(self.device_)
            self.n_trainable_params_ = sum(p.numel() for p in self.network_.parameters() if p.requires_grad)
            encoded = self._encode(texts, task_index, targets)
            self._train(encoded, np.random.default_rng(seed))
        self._set_routing_attributes()
        return self

    def _train(self, encoded: dict[str, Any], rng: np.random.Generator) -> None:
        """Run the training of ``fit``; methods with stages (PEMT) override it."""
        self.loss_curve_ = self._fit_loop(encoded, rng, self.max_epochs)
        self.n_iter_ = len(self.loss_curve_)

    def _load_backbone(self) -> Backbone:
        return load_backbone(self.backbone, self.device_)

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
    ) -> list[float]:
        """Train the parameters that require grad for ``n_epochs``; return each epoch's mean loss."""
        n_samples = len(encoded["input_ids"])
        n_batches = -(-n_samples // self.batch_size)
        optimizer, scheduler = self._make_optimizer(n_epochs * n_batches, weight_decay)
        losses = []
        label = f"[{type(self).__name__}{' ' + stage if stage else ''}]"
        for epoch in range(n_epochs):
            start = time.perf_counter()
            order = rng.permutation(n_samples)
            batches = [order[i : i + self.batch_size] for i in range(0, n_samples, self.batch_size)]
            epoch_loss = self._run_epoch(batches, encoded, optimizer, scheduler, f"epoch {epoch + 1}/{n_epochs}")
            losses.append(epoch_loss)
            if self.verbose == 1:
                print(f"{label} epoch {epoch + 1}/{n_epochs}  loss {epoch_loss:.4f}  ({time.perf_counter() - start:.1f}s)", flush=True)
        optimizer.zero_grad(set_to_none=True)
        return losses

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

    def _train_step(self, batch, optimizer, scheduler) -> float:
        optimizer.zero_grad(set_to_none=True)
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
            try:
                encoded = self._encode(texts, task_index, targets)
                self.adapt_loss_curve_ = self._fit_loop(
                    encoded, np.random.default_rng(seed), max_epochs or self.max_epochs,
                    weight_decay=None if mode == "all" else 0.0, stage=f"adapt:{mode}",
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

    # -------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        network = state.get("network_")
        if network is not None and any(p.device.type != "cpu" for p in network.parameters()):
            state["network_"] = _cpu_copy(network)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        device = getattr(self, "device_", None)
        if device is not None and device.type == "cuda":
            if torch.cuda.is_available():
                self.network_.to(device)
            else:
                warnings.warn(
                    f"{type(self).__name__} was fitted on {device}, but CUDA is not available here; "
                    "it will predict on the CPU.",
                    UserWarning,
                    stacklevel=2,
                )
                self.device_ = torch.device("cpu")

    def _check_fitted(self) -> None:
        check_is_fitted(self, "network_")

    def _iter_eval_batches(self, encoded: dict[str, Any]) -> Iterator[np.ndarray]:
        """Index batches for prediction, ordered by task, then by length: few tasks and little padding per batch."""
        lengths = np.asarray([len(ids) for ids in encoded["input_ids"]])
        order = np.lexsort((lengths, encoded["tasks"]))
        for start in range(0, len(order), self.batch_size):
            yield order[start : start + self.batch_size]
