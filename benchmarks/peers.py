"""The peers skillfit is measured against, built to share everything but the method.

* :class:`PeftClassifier` puts peft's LoRA or Poly into a backbone and trains it with
  skillfit's own loop, optimizer, schedule, batching and masked union-label head. Only
  the adapter layers differ from a skillfit estimator, so a gap in quality or speed is
  the adapter's.
* :func:`fit_per_task` / :func:`predict_per_task` fit one logistic regression per
  task on fixed features: TF-IDF of the text, or frozen mean-pooled backbone embeddings
  (:func:`frozen_embeddings`).

Benchmark code, not part of the library: it needs ``peft`` (``pip install peft``).
"""

from __future__ import annotations

from numbers import Integral
from typing import Callable

import numpy as np
import torch
from torch import nn

from skillfit.backbones import DEFAULT_BACKBONE, load_backbone
from skillfit.estimators._batching import pad_sequences
from skillfit.estimators._networks import pool_hidden_states
from skillfit.estimators._params import estimator_parameters, parameter
from skillfit.estimators.classifier import SkillClassifierBase
from skillfit._validation import Interval, Options
from skillfit.skills import SkillConfig, TaskContext


class _PeftBackbone(nn.Module):
    """A peft model called like the bare backbone; Poly gets each row's task id from the context."""

    def __init__(self, peft_model: nn.Module, context: TaskContext, pass_task_ids: bool) -> None:
        super().__init__()
        self.peft_model = peft_model
        self.context = context
        self.pass_task_ids = pass_task_ids

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        extra = {}
        if self.pass_task_ids:
            batch_tasks, example_group = self.context.groups(input_ids.shape[0], input_ids.device)
            extra["task_ids"] = batch_tasks[example_group]
        # The tuner model (LoraModel / PolyModel) takes task_ids; PeftModel's generic forward does not.
        return self.peft_model.base_model(input_ids=input_ids, attention_mask=attention_mask, **extra)


@estimator_parameters
class PeftClassifier(SkillClassifierBase):
    """skillfit's classifier with peft's adapters in place of skill layers.

    Parameters
    ----------
    peft_method : {"lora", "poly"}
        ``"lora"``: one ``peft.LoraConfig(r=rank, lora_alpha=alpha)`` adapter shared by
        all tasks. ``"poly"``: ``peft.PolyConfig(r=rank, n_skills, n_splits)`` with one
        router row per task (peft scales its update by ``1/r``; ``alpha`` is unused).
    n_skills, n_splits : int
        Poly's skills and routing heads.
    """

    peft_method: str = parameter("lora", Options("lora", "poly"))
    n_skills: int = parameter(8, Interval(Integral, 1, None))
    n_splits: int = parameter(1, Interval(Integral, 1, None))

    def _skill_config(self, n_tasks: int) -> SkillConfig:
        # Only read for routing_weights_ when no skill layer exists.
        return SkillConfig(n_tasks=n_tasks, n_shared=1, rank=self.rank)

    def _inject(self, backbone, skill_config: SkillConfig) -> TaskContext:
        import peft

        targets = self._target_modules(backbone)
        if self.peft_method == "lora":
            config = peft.LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=targets)
        else:
            config = peft.PolyConfig(
                r=self.rank,
                n_tasks=len(self.tasks_),
                n_skills=self.n_skills,
                n_splits=self.n_splits,
                target_modules=targets,
            )
        context = TaskContext()
        backbone.model = _PeftBackbone(peft.get_peft_model(backbone.model, config), context, self.peft_method == "poly")
        return context

    def _is_router_parameter(self, name: str) -> bool:
        # peft's Poly router logits get the same router learning rate as skillfit's.
        return name.endswith("module_logits") or super()._is_router_parameter(name)


def frozen_embeddings(
    texts: list[str], backbone: str = DEFAULT_BACKBONE, max_length: int = 64, batch_size: int = 64
) -> np.ndarray:
    """Mean-pooled last hidden states of the frozen backbone, shape ``(n_texts, hidden)``.

    Texts are encoded in order of length, so batches carry little padding.
    """
    loaded = load_backbone(backbone, "cpu")
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    order = np.argsort([len(row) for row in ids], kind="stable")
    out = np.zeros((len(texts), loaded.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            input_ids, mask = pad_sequences([ids[i] for i in rows], tokenizer.pad_token_id)
            hidden = model(input_ids=input_ids, attention_mask=mask).last_hidden_state
            out[rows] = pool_hidden_states(hidden, mask, "mean").numpy()
    return out


def fit_per_task(make_model: Callable[[], object], features, y: np.ndarray, tasks: np.ndarray) -> dict:
    """One ``make_model()`` fitted on each task's rows: ``{task: model}``.

    ``features`` is anything row-indexable by a boolean mask that ``make_model()``
    accepts (a list of texts for a TF-IDF pipeline, an array of embeddings).
    """
    return {task: make_model().fit(_take(features, tasks == task), y[tasks == task]) for task in np.unique(tasks)}


def predict_per_task(models: dict, features, tasks: np.ndarray) -> np.ndarray:
    """Predict each row with its task's model from :func:`fit_per_task`."""
    predictions = np.empty(len(tasks), dtype=object)
    for task in np.unique(tasks):
        rows = tasks == task
        predictions[rows] = models[task].predict(_take(features, rows))
    return predictions


def _take(features, rows: np.ndarray):
    if isinstance(features, np.ndarray):
        return features[rows]
    return [value for value, keep in zip(features, rows) if keep]
