"""PEMT in text form: per-task LoRA experts mixed by gates over task descriptions."""

from __future__ import annotations


from numbers import Real
from typing import Any

import numpy as np
import torch

from .._warnings import warn_user
from .._validation import NONE, InstanceOf, Interval
from ..backbones import Backbone
from ..skills import SkillConfig, gate_experts, gate_weights, skill_layers, task_sparsity_loss
from ._concurrency import tokenize
from ._docs import fill_doc, seq2seq_doc
from ._networks import hidden_states, pool_hidden_states
from ._params import estimator_parameters, parameter
from ._training.loop import TrainingLoop
from .classifier import SkillClassifierBase
from .seq2seq import SkillSeq2SeqBase


@estimator_parameters
class _PEMTMethod:
    """Stage 1: one LoRA expert and one description vector per task. Stage 2: gated experts + own adapter."""

    task_descriptions: dict | None = parameter(None, NONE, InstanceOf(dict, "a dict of task id to str"))
    sparsity_weight: float = parameter(0.1, Interval(Real, 0, None))
    gate_temperature: float = parameter(1.0, Interval(Real, 0, None, closed="neither"))

    _supports_warm_start = False  # stage 2 has converted the experts

    def _skill_config(self, n_tasks: int) -> SkillConfig:
        """Stage 1: one private LoRA expert per task."""
        return self._skills(n_tasks, n_shared=0, n_exclusive=1, routing="none")

    def _description_texts(self, tasks: list) -> list[str]:
        descriptions = self.task_descriptions or {}
        texts = [str(descriptions.get(task, task)) for task in tasks]
        empty = [task for task, text in zip(tasks, texts) if not text.strip()]
        if empty:
            raise ValueError(f"task_descriptions gives empty descriptions for tasks {empty}; describe each task in words.")
        return texts

    def _embed_descriptions(self, model: torch.nn.Module, tasks: list) -> torch.Tensor:
        """Mean-pooled states of the frozen backbone for each task's description text."""
        encoding = tokenize(self.tokenizer_, self._description_texts(tasks), truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
        encoding = {key: value.to(self.device_) for key, value in encoding.items() if key in ("input_ids", "attention_mask")}
        with torch.no_grad():
            hidden = hidden_states(model, encoding["input_ids"], encoding["attention_mask"])
        return pool_hidden_states(hidden, encoding["attention_mask"], "mean").float()

    def _initial_task_descriptions(self, backbone: Backbone) -> torch.Tensor:
        unmatched = sorted(set(self.task_descriptions or {}) - set(self.tasks_.tolist()), key=str)
        if unmatched:
            warn_user(
                f"task_descriptions describes task(s) {unmatched[:10]} that X does not have (tasks: "
                f"{self.tasks_.tolist()[:10]}); they are not used. Check the ids for typos, or ignore this if "
                "they are tasks you will add with adapt().",
                UserWarning,
            )
        backbone.model.eval()
        return self._embed_descriptions(backbone.model, self.tasks_.tolist())

    def _add_task_inputs(self, new_tasks: list) -> None:
        network = self.network_
        with network.context.bypass():
            new_rows = self._embed_descriptions(network.backbone, new_tasks)
        grown = torch.cat([network.task_descriptions.detach(), new_rows.to(network.task_descriptions.device)])
        network.task_descriptions = torch.nn.Parameter(grown, requires_grad=network.task_descriptions.requires_grad)
        network.context.task_descriptions = network.task_descriptions

    def _train(self, loop: TrainingLoop, encoded: dict[str, Any], validation: dict | None) -> None:
        loop.fit_loop(encoded, self.max_epochs, stage="stage 1", validation=validation)
        network = self.network_
        gate_experts(network.backbone, network.task_descriptions.shape[1], self.gate_temperature)
        network.task_descriptions.requires_grad_(False)
        network.to(self.device_)
        self.n_trainable_params_ = sum(p.numel() for p in network.parameters() if p.requires_grad)
        loop.fit_loop(encoded, self.max_epochs, stage="stage 2", validation=validation)

    def _batch_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        loss = super()._batch_loss(batch)
        gated = [layer for _, layer in skill_layers(self.network_) if layer.config.routing == "gate"]
        if not gated or self.sparsity_weight == 0:
            return loss
        network = self.network_
        descriptions = network.task_descriptions
        batch_tasks, row_task = torch.unique(batch["tasks"], return_inverse=True)
        batch_tasks = batch_tasks.to(descriptions.device)
        mean_gate = torch.stack([layer.router(batch_tasks, network.context)[:, 0] for layer in gated]).mean(dim=0)
        # Experts are the tasks of stage 1; tasks added by adapt() have no expert.
        per_task = task_sparsity_loss(mean_gate, descriptions[batch_tasks], descriptions[: mean_gate.shape[1]])
        # Each task's term weighs its share of the loss units (examples, or target tokens), as
        # the task loss does: the objective then adds up over any split of the batch (n_devices).
        units = self._row_units(batch).to(per_task.device, per_task.dtype)
        task_units = units.new_zeros(len(batch_tasks)).index_add_(0, row_task.to(units.device), units)
        return loss + self.sparsity_weight * (per_task * task_units / task_units.sum()).sum()

    def _set_routing_attributes(self) -> None:
        super()._set_routing_attributes()
        self.layer_gate_weights_ = gate_weights(self.network_)
        self.gate_weights_ = np.mean(list(self.layer_gate_weights_.values()), axis=0)


PEMT_PARAMETERS = """\
task_descriptions : dict of task id to str, default=None
        A short text describing each task, e.g. ``{"sms_spam": "is this SMS spam"}``;
        tasks missing from it are described by their id.
    sparsity_weight : float, default=0.1
        Weight ``lambda`` of the task-sparsity loss.
    gate_temperature : float, default=1.0
        Temperature ``tau`` of the gate softmax."""

PEMT_ATTRIBUTES = """\
gate_weights_ : ndarray of shape (n_tasks, n_experts)
        Each task's gate over the experts (columns: the task each expert was trained
        on), averaged over layers. ``n_experts`` is the number of tasks at ``fit``:
        tasks added by ``adapt`` have a gate row but no expert.
    layer_gate_weights_ : dict of str to ndarray (n_tasks, n_experts)
        The same per adapted layer."""

PEMT_REFERENCES = """\
.. [1] Lin, Fu, Liu, Li, Sun. "PEMT: Multi-Task Correlation Guided Mixture-of-Experts
       Enables Parameter-Efficient Transfer Learning." Findings of ACL 2024
       (arXiv:2402.15082)."""


@fill_doc(method_parameters=PEMT_PARAMETERS, method_attributes=PEMT_ATTRIBUTES, references=PEMT_REFERENCES)
@estimator_parameters
class PEMTClassifier(_PEMTMethod, SkillClassifierBase):
    """Multi-task text classifier with PEMT: task experts mixed by description-driven gates.

    ``fit`` runs two stages. Stage 1 trains one LoRA expert per task together with a
    task-description vector, initialised from the frozen backbone's mean embedding of
    the task's description (``task_descriptions[task]``, default the task id) and
    prepended to each text as a soft prompt token. Stage 2 freezes the experts and the
    descriptions and trains, per layer, a gate ``g = softmax(q_t W_g / tau)`` over all
    experts (``W_g`` starts at zero: a uniform mixture) plus a fresh adapter per task:
    ``y = W0 x + sum_s g_s s B_s A_s x + s B_t A_t x``. Its loss adds
    ``sparsity_weight * sum_s g_s (1 - cos(q_t, q_s))`` for each task of the batch
    (weighted by the task's share of the batch's loss units), which pushes each task's
    gate towards experts of tasks described alike.

    Where the text form simplifies the paper (Lin et al. 2024 [1]_): the task description
    is one soft prompt token, not a prompt of several tokens; the gate reads the
    description vector directly rather than a prompt encoded by the backbone; every
    task is both a source (its expert) and a target (its gate and adapter), trained
    in one joint stage 2 instead of one run per target; and the task states compared
    by the sparsity loss are the description vectors.

    Parameters
    ----------
    {method_parameters}
    {classifier_parameters}
    {common_parameters}

    Attributes
    ----------
    {method_attributes}
    {fitted_attributes}

    See Also
    --------
    {see_also}

    References
    ----------
    {references}

    Examples
    --------
    >>> from skillfit import PEMTClassifier
    >>> from skillfit.datasets import make_tiny_backbone
    >>> X = [("a great film", "movies"), ("a dull plot", "movies"),
    ...      ("win a free prize now", "sms"), ("see you at noon", "sms")]
    >>> y = ["pos", "neg", "spam", "ham"]
    >>> descriptions = {"movies": "is this film review positive", "sms": "is this text message spam"}
    >>> clf = PEMTClassifier(task_descriptions=descriptions, backbone=make_tiny_backbone(), max_length=64,
    ...                      max_epochs=1, random_state=0)
    >>> clf.fit(X, y).tasks_
    array(['movies', 'sms'], dtype=object)
    >>> clf.predict_proba(X).shape
    (4, 4)

    Each task's gate over the 2 experts (one per task) sums to 1:

    >>> clf.gate_weights_.shape, clf.gate_weights_.sum(axis=1).round(4).tolist()
    ((2, 2), [1.0, 1.0])
    """


@seq2seq_doc(
    "PEMT: per-task experts mixed by gates over task descriptions",
    "PEMTClassifier",
    method_parameters=PEMT_PARAMETERS,
    method_attributes=PEMT_ATTRIBUTES,
    references=PEMT_REFERENCES,
    example_parameters=(
        'task_descriptions={"translate": "translate into French", "summarize": "shorten the text"}, max_length=64'
    ),
)
@estimator_parameters
class PEMTSeq2Seq(_PEMTMethod, SkillSeq2SeqBase):
    pass
