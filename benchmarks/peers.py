"""The peers skillfit is measured against, built to share everything but the method.

* :class:`PeftClassifier` puts peft's LoRA or Poly into a backbone and trains it with
  skillfit's own loop, optimizer, schedule, batching and masked union-label head. Only
  the adapter layers differ from a skillfit estimator, so a gap in quality or speed is
  the adapter's. :class:`PeftSeq2Seq` does the same for text to text (a decoder-only or
  encoder-decoder generation model, skillfit's loss, batches and generation settings).
* :func:`zero_shot_predict` generates with the frozen model alone, batched and
  left-padded as skillfit's ``predict`` does.
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
from skillfit.estimators.seq2seq import SkillSeq2SeqBase
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
            batch_tasks, example_group = self.context._groups(input_ids.shape[0], input_ids.device)
            extra["task_ids"] = batch_tasks[example_group]
        # The tuner model (LoraModel / PolyModel) takes task_ids; PeftModel's generic forward does not.
        return self.peft_model.base_model(input_ids=input_ids, attention_mask=attention_mask, **extra)


@estimator_parameters
class _PeftMethod:
    """peft's LoRA or Poly in place of skill layers: the parameters and hooks both peers share."""

    peft_method: str = parameter("lora", Options("lora", "poly"))
    n_skills: int = parameter(8, Interval(Integral, 1, None))
    n_splits: int = parameter(1, Interval(Integral, 1, None))

    # How the peft model is called (set by each peer): like the bare backbone, or like the generation model.
    _wrapper = None

    def _skill_config(self, n_tasks: int) -> SkillConfig:
        # Only read for routing_weights_ when no skill layer exists.
        return SkillConfig(n_tasks=n_tasks, n_shared=1, rank=self.rank)

    def _inject(self, backbone, skill_config: SkillConfig) -> TaskContext:
        context = TaskContext()
        backbone.model = self._wrapper(_peft_model(self, backbone), context, self.peft_method == "poly")
        return context

    def _is_router_parameter(self, name: str) -> bool:
        # peft's Poly router logits get the same router learning rate as skillfit's.
        return name.endswith("module_logits") or super()._is_router_parameter(name)


@estimator_parameters
class PeftClassifier(_PeftMethod, SkillClassifierBase):
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

    _wrapper = _PeftBackbone


class _PeftGenerator(nn.Module):
    """A peft generation model called like the bare one; Poly gets each row's task id from the context.

    Its ``forward`` names ``position_ids`` and ``logits_to_keep`` so that skillfit's network
    passes them (only the answer positions' logits are computed, as for skill layers).
    """

    def __init__(self, peft_model: nn.Module, context: TaskContext, pass_task_ids: bool) -> None:
        super().__init__()
        self.peft_model = peft_model
        self.context = context
        self.pass_task_ids = pass_task_ids
        self.config = peft_model.base_model.model.config

    def _task_ids(self, n_rows: int, device: torch.device) -> dict:
        if not self.pass_task_ids:
            return {}
        batch_tasks, example_group = self.context._groups(n_rows, device)
        return {"task_ids": batch_tasks[example_group]}

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, position_ids=None,
                logits_to_keep=0, **kwargs):
        rows = (input_ids if input_ids is not None else inputs_embeds).shape[0]
        device = (input_ids if input_ids is not None else inputs_embeds).device
        extra = {"position_ids": position_ids} if position_ids is not None else {}
        if logits_to_keep:
            extra["logits_to_keep"] = logits_to_keep
        return self.peft_model.base_model(
            input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, labels=labels,
            **extra, **kwargs, **self._task_ids(rows, device),
        )

    def generate(self, **kwargs):
        source = kwargs.get("input_ids", kwargs.get("inputs_embeds"))
        return self.peft_model.base_model.generate(**kwargs, **self._task_ids(source.shape[0], source.device))

    def get_input_embeddings(self):
        return self.peft_model.get_input_embeddings()


@estimator_parameters
class PeftSeq2Seq(_PeftMethod, SkillSeq2SeqBase):
    """skillfit's text-to-text estimator with peft's adapters in place of skill layers.

    Parameters as :class:`PeftClassifier`. Generation follows each row's task through
    peft's Poly only for greedy search and sampling (``num_beams=1``): peft binds task
    ids to the batch before generation expands it.
    """

    _wrapper = _PeftGenerator


def _peft_model(estimator, backbone):
    """``backbone.model`` with peft's LoRA or Poly layers, as the estimator's parameters say."""
    import peft

    targets = estimator._target_modules(backbone)
    if estimator.peft_method == "lora":
        config = peft.LoraConfig(r=estimator.rank, lora_alpha=estimator.alpha, lora_dropout=estimator.dropout,
                                 target_modules=targets)
    else:
        config = peft.PolyConfig(r=estimator.rank, n_tasks=len(estimator.tasks_), n_skills=estimator.n_skills,
                                 n_splits=estimator.n_splits, target_modules=targets)
    return peft.get_peft_model(backbone.model, config)


def zero_shot_predict(backbone: str, texts: list[str], max_new_tokens: int = 32, batch_size: int = 16,
                      max_length: int = 512) -> np.ndarray:
    """What the frozen generation model generates for each text (greedy, special tokens dropped, stripped).

    Rows are sorted by length and left-padded, as skillfit's ``predict`` batches them.
    """
    from skillfit.backbones import load_generator

    loaded = load_generator(backbone, "cpu")
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    order = np.argsort([len(row) for row in ids], kind="stable")
    predictions = np.empty(len(texts), dtype=object)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            input_ids, mask = pad_sequences([ids[i] for i in rows], tokenizer.pad_token_id, left=True)
            output = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                    do_sample=False, num_beams=1, pad_token_id=tokenizer.pad_token_id,
                                    eos_token_id=tokenizer.eos_token_id)
            if not loaded.config.is_encoder_decoder:
                output = output[:, input_ids.shape[1]:]
            predictions[rows] = [text.strip() for text in tokenizer.batch_decode(output, skip_special_tokens=True)]
    return predictions


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
