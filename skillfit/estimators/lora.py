"""LoRA baselines of the family: one adapter shared by all tasks, or one per task."""

from __future__ import annotations

from .._validation import Options
from ..skills import SkillConfig
from ._docs import fill_doc, seq2seq_doc
from ._params import estimator_parameters, parameter
from .classifier import SkillClassifierBase
from .seq2seq import SkillSeq2SeqBase


@estimator_parameters
class _LoRAMethod:
    """One LoRA for all tasks (``"shared"``) or one per task (``"private"``), no routing."""

    sharing: str = parameter("shared", Options("shared", "private"))

    def _skill_config(self, n_tasks: int) -> SkillConfig:
        shared = self.sharing == "shared"
        return self._skills(n_tasks, n_shared=int(shared), n_exclusive=int(not shared), routing="none")


LORA_PARAMETERS = """\
sharing : {"shared", "private"}, default="shared"
        One LoRA for all tasks, or one per task."""

LORA_REFERENCES = """\
.. [1] Hu, Shen, Wallis, Allen-Zhu, Li, Wang, Wang, Chen. "LoRA: Low-Rank Adaptation
       of Large Language Models." ICLR 2022 (arXiv:2106.09685)."""


@fill_doc(method_parameters=LORA_PARAMETERS, references=LORA_REFERENCES)
@estimator_parameters
class LoRAClassifier(_LoRAMethod, SkillClassifierBase):
    """Multi-task text classifier with plain LoRA, shared by all tasks or private to each.

    The two ends of the family: ``sharing="shared"`` trains one LoRA [1]_ that every task
    uses (tasks differ only by their labels in the head); ``sharing="private"`` trains
    one LoRA per task and shares nothing but the frozen backbone.

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
    >>> from skillfit import LoRAClassifier
    >>> from skillfit.datasets import make_tiny_backbone
    >>> X = [("a great film", "movies"), ("a dull plot", "movies"),
    ...      ("win a free prize now", "sms"), ("see you at noon", "sms")]
    >>> y = ["pos", "neg", "spam", "ham"]
    >>> clf = LoRAClassifier(sharing="private", backbone=make_tiny_backbone(), max_epochs=1, random_state=0)
    >>> clf.fit(X, y).tasks_
    array(['movies', 'sms'], dtype=object)
    >>> clf.predict_proba(X).sum(axis=1).round(4)
    array([1., 1., 1., 1.])
    >>> set(clf.predict(X)) <= set(clf.classes_)
    True

    Nothing is routed:

    >>> clf.layer_routing_weights_
    {}
    """


@seq2seq_doc(
    "plain LoRA, shared by all tasks or private to each",
    "LoRAClassifier",
    method_parameters=LORA_PARAMETERS,
    references=LORA_REFERENCES,
    example_parameters='sharing="private"',
)
@estimator_parameters
class LoRASeq2Seq(_LoRAMethod, SkillSeq2SeqBase):
    pass
