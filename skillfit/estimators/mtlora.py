"""MTLoRA in text form: a task-agnostic LoRA everywhere, task-specific LoRAs on top."""

from __future__ import annotations

from numbers import Integral

from .._validation import Interval
from ..backbones import Backbone
from ..skills import SkillConfig, inject_skills, target_layer_names, top_block_layers
from ._docs import fill_doc, seq2seq_doc
from ._params import estimator_parameters, parameter
from .classifier import SkillClassifierBase
from .seq2seq import SkillSeq2SeqBase


@estimator_parameters
class _MTLoRAMethod:
    """Shared rank-``rank`` LoRA on every target; plus a rank-``task_rank`` LoRA per task in the top blocks."""

    task_rank: int = parameter(4, Interval(Integral, 1, None))
    n_task_layers: int = parameter(2, Interval(Integral, 0, None))

    def _skill_config(self, n_tasks: int) -> SkillConfig:
        """The inventory of layers outside the top blocks: the task-agnostic LoRA alone."""
        return self._skills(n_tasks, n_shared=1, n_exclusive=0, routing="none")

    def _top_block_config(self, n_tasks: int) -> SkillConfig:
        """Top blocks: ``y = W0 x + s x A B + s_t x A_t B_t`` (task-agnostic plus task-specific)."""
        return self._skills(
            n_tasks, n_shared=1, n_exclusive=1, exclusive_rank=self.task_rank, routing="none", combine="output"
        )

    def _inject(self, backbone: Backbone, skill_config: SkillConfig):
        targets = self._target_modules(backbone)
        top = top_block_layers(target_layer_names(backbone.model, targets), self.n_task_layers)
        top_config = self._top_block_config(skill_config.n_tasks)
        return inject_skills(backbone.model, lambda name: top_config if name in top else skill_config, targets)


MTLORA_PARAMETERS = """\
task_rank : int, default=4
        Rank of the task-specific LoRAs.
    n_task_layers : int, default=2
        Number of top blocks whose target layers get task-specific LoRAs (counted per
        stack, so encoder and decoder each get their own top blocks)."""

MTLORA_REFERENCES = """\
.. [1] Agiza, Neseem, Reda. "MTLoRA: Low-Rank Adaptation Approach for Efficient
       Multi-Task Learning." CVPR 2024 (arXiv:2403.20320)."""


@fill_doc(method_parameters=MTLORA_PARAMETERS, references=MTLORA_REFERENCES)
@estimator_parameters
class MTLoRAClassifier(_MTLoRAMethod, SkillClassifierBase):
    """Multi-task text classifier with MTLoRA: shared low-rank updates plus task-specific ones on top.

    Every target layer gets a task-agnostic LoRA of rank ``rank``; the target layers of
    the last ``n_task_layers`` transformer blocks also get one LoRA of rank
    ``task_rank`` per task, added in output space:
    ``y = W0 x + s x A B + s_t x A_t B_t`` with ``s = alpha / rank`` and
    ``s_t = alpha / task_rank``. With ``n_task_layers=0`` it is a shared LoRA.

    The original (Agiza et al. 2024 [1]_) is for vision transformers with several task
    heads reading one image. In text form skillfit keeps its two kinds of low-rank
    modules (task-agnostic everywhere, task-specific in the deep blocks, where
    features become task-specific) and drops the vision parts: the per-task feature
    streams and their fusion across scales, since each text here belongs to one task
    and goes to one head.

    Parameters
    ----------
    {method_parameters}
    {classifier_parameters}
    {common_parameters}

    Attributes
    ----------
    {fitted_attributes}

    See Also
    --------
    {see_also}

    References
    ----------
    {references}

    Examples
    --------
    Task-specific LoRAs of rank 2 in the top block of the tiny BERT's 2:

    >>> from skillfit import MTLoRAClassifier
    >>> from skillfit.datasets import make_tiny_backbone
    >>> X = [("a great film", "movies"), ("a dull plot", "movies"),
    ...      ("win a free prize now", "sms"), ("see you at noon", "sms")]
    >>> y = ["pos", "neg", "spam", "ham"]
    >>> clf = MTLoRAClassifier(task_rank=2, n_task_layers=1, backbone=make_tiny_backbone(),
    ...                        max_epochs=1, random_state=0)
    >>> clf.fit(X, y).classes_
    array(['ham', 'neg', 'pos', 'spam'], dtype=object)
    >>> clf.tasks_
    array(['movies', 'sms'], dtype=object)
    >>> proba = clf.predict_proba(X)
    >>> proba.shape, proba.sum(axis=1).round(4)
    ((4, 4), array([1., 1., 1., 1.]))
    """


@seq2seq_doc(
    "MTLoRA: a shared LoRA plus per-task LoRAs in the top blocks of encoder and decoder",
    "MTLoRAClassifier",
    method_parameters=MTLORA_PARAMETERS,
    references=MTLORA_REFERENCES,
    example_parameters="task_rank=2, n_task_layers=1",
    backbone="t5",
)
@estimator_parameters
class MTLoRASeq2Seq(_MTLoRAMethod, SkillSeq2SeqBase):
    pass
