"""The subclass contract of skillfit estimators: every hook, in one place.

:class:`~skillfit.estimators._base.SkillEstimatorBase` runs ``fit``, ``adapt`` and
prediction by calling these hooks. Two layers fill them in:

- the **kind** (``SkillClassifierBase`` in ``classifier.py``, ``SkillSeq2SeqBase`` in
  ``seq2seq.py``) says what targets are, which network to build, how to batch, score
  and predict, and how to grow outputs for new tasks;
- the **method** (``_PolyMethod``, ``_CPolyMethod``, ... one small class each) says
  which skills every layer holds (:meth:`~EstimatorHooks._skill_config`, required) and
  may override the hooks marked *method* below (stages, regularisers, inputs).

Hooks that have a sensible default implement it here; the others raise
``NotImplementedError`` naming the hook. ``docs/architecture.md`` walks through a new
method.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..backbones import Backbone, default_target_modules
from ..skills import SkillConfig, TaskContext, inject_skills, routing_weights
from ._concurrency import tokenize
from ._training.loop import TrainingLoop, is_router_parameter


def _missing(hook: str) -> NotImplementedError:
    return NotImplementedError(f"{hook} is a hook of the estimator kind or method; the subclass must define it.")


class EstimatorHooks:
    """Every hook ``SkillEstimatorBase`` calls, with its default where one exists."""

    #: Which loader reads the backbone: ``"model"`` (hidden states) or ``"generator"`` (with an LM head). *Kind.*
    _backbone_kind: str = "model"
    #: The torch module class ``_build_network`` returns; persistence rebuilds it with
    #: ``_network_class.from_structure``. *Kind.*
    _network_class: type[torch.nn.Module]

    # ------------------------------------------------------------------ method
    def _skill_config(self, n_tasks: int) -> SkillConfig:
        """The skill inventory every adapted layer gets, for ``n_tasks`` tasks. *Method, required.*"""
        raise _missing("_skill_config")

    # Whether fit(warm_start=True) can continue a fitted model. *Method* (PEMT's stages cannot).
    _supports_warm_start = True

    def _check_method_params(self) -> None:
        """Checks across the method's parameters, after the per-parameter table. *Method.*"""

    def _inject(self, backbone: Backbone, skill_config: SkillConfig) -> TaskContext:
        """Put skill layers into ``backbone.model``; return their task context. *Method* (MTLoRA varies it by layer)."""
        return inject_skills(backbone.model, skill_config, self._target_modules(backbone))

    def _target_modules(self, backbone: Backbone) -> list[str] | str:
        """The layers to adapt: ``target_modules``, or the architecture's default."""
        return self.target_modules if self.target_modules is not None else default_target_modules(backbone.config)

    def _initial_task_descriptions(self, backbone: Backbone) -> torch.Tensor | None:
        """Task-description vectors ``(n_tasks, dim)`` for methods that use them (PEMT). *Method.*"""
        return None

    def _add_task_inputs(self, new_tasks: list) -> None:
        """Grow what the input side keeps per task when ``adapt`` adds tasks (PEMT's descriptions). *Method.*"""

    def _train(self, loop: TrainingLoop, encoded: dict[str, Any], validation: dict[str, Any] | None) -> None:
        """The training of ``fit``: one loop of ``max_epochs``. *Method* (PEMT runs two stages)."""
        loop.fit_loop(encoded, self.max_epochs, validation=validation)

    def _batch_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training objective of a batch: the task loss plus any regulariser. *Method.*"""
        return self._task_loss(batch)

    def _is_router_parameter(self, name: str) -> bool:
        """Whether a trainable parameter takes ``router_learning_rate``. *Method.*"""
        return is_router_parameter(name)

    def _set_routing_attributes(self) -> None:
        """Set ``routing_weights_`` and ``layer_routing_weights_`` from the network. *Method* (PEMT adds gates)."""
        per_layer = routing_weights(self.network_)
        self.layer_routing_weights_ = per_layer
        if per_layer:
            # Side by side, not averaged: skill k of one layer or head is unrelated to skill
            # k of another, so an average would mix unrelated skills and come out near uniform.
            self.routing_weights_ = np.concatenate([w.reshape(len(self.tasks_), -1) for w in per_layer.values()], axis=1)
        else:
            self.routing_weights_ = np.ones((len(self.tasks_), self._skill_config(len(self.tasks_)).n_shared))

    # -------------------------------------------------------------------- kind
    def _check_targets(self, y: Any, n_samples: int) -> Any:
        """Validate ``y`` of ``fit``, set the target attributes (``classes_``), return encoded targets. *Kind.*"""
        raise _missing("_check_targets")

    def _warm_start_targets(self, y: Any, n_samples: int, task_index: np.ndarray) -> Any:
        """``y`` of a warm-started ``fit``, encoded as before; refuse what the fitted model cannot learn. *Kind.*"""
        raise _missing("_warm_start_targets")

    def _check_validation_targets(self, y_val: Any, n_samples: int) -> Any:
        """``y_val`` encoded as ``fit`` encodes ``y``. *Kind.*"""
        raise _missing("_check_validation_targets")

    def _check_validation_pairs(self, task_index: np.ndarray, targets: Any, val_index: np.ndarray, val_targets: Any) -> None:
        """Refuse validation rows the fitted model cannot predict (a label its task never had). *Kind.*"""

    def _check_adapt_targets(self, y: Any, n_samples: int) -> Any:
        """Validate ``y`` of ``adapt`` (new labels allowed), before anything changes. *Kind.*"""
        raise _missing("_check_adapt_targets")

    def _stratification_keys(self, task_index: np.ndarray, targets: Any) -> np.ndarray:
        """One key per row; the held-out validation rows keep each key's proportion. *Kind.*"""
        return task_index

    def _build_network(self, backbone: Backbone, skill_config: SkillConfig, targets: Any, task_index: np.ndarray) -> torch.nn.Module:
        """Inject the skills and wrap the backbone in the kind's network. *Kind.*"""
        raise _missing("_build_network")

    def _encode(self, texts: list[str], task_index: np.ndarray, targets: Any) -> dict[str, Any]:
        """Token ids of the texts with their task indices and targets. *Kind.*"""
        encoding = tokenize(self.tokenizer_, texts, truncation=True, max_length=self._length_limit())
        return {"input_ids": encoding["input_ids"], "tasks": task_index, "targets": targets}

    def _make_batch(self, indices: np.ndarray, encoded: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Tensors of the rows ``indices``: padded ids on the device, a CPU ``"tasks"`` tensor. *Kind.*"""
        raise _missing("_make_batch")

    def _task_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean loss of the batch's predictions (what validation scores with ``"loss"``). *Kind.*"""
        raise _missing("_task_loss")

    def _loss_units(self, batch: dict[str, torch.Tensor]) -> int:
        """What the batch loss averages over: examples (classifiers) or target tokens (text-to-text). *Kind.*"""
        return len(batch["input_ids"])

    def _row_units(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Each row's share of :meth:`_loss_units` (1 per example, or its target tokens), on the device. *Kind.*"""
        return torch.ones(len(batch["input_ids"]), device=batch["input_ids"].device)

    def _predict_encoded(self, encoded: dict[str, Any]) -> Any:
        """Predictions for encoded rows, comparable with the encoded targets. *Kind.*"""
        raise _missing("_predict_encoded")

    def _prediction_score(self, targets: Any, predictions: Any) -> float:
        """What ``score`` reports for these predictions (accuracy, ROUGE-L, exact match). *Kind.*"""
        raise _missing("_prediction_score")

    def _add_task_outputs(self, raw_targets: Any, task_index: np.ndarray, n_old_tasks: int) -> tuple[Any, list[torch.nn.Parameter]]:
        """Grow what the output side keeps per task and label for ``adapt``. *Kind.*

        Returns the encoded targets and the output parameters created for new labels.
        """
        raise _missing("_add_task_outputs")
