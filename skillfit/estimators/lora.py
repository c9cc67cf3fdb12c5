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


@fill_doc
@estimator_parameters
class LoRAClassifier(_LoRAMethod, SkillClassifierBase):
    """Multi-task text classifier with plain LoRA, shared by all tasks or private to each.

    The two ends of the family: ``sharing="shared"`` trains one LoRA that every task
    uses (tasks differ only by their labels in the head); ``sharing="private"`` trains
    one LoRA per task and shares nothing but the frozen backbone.

    Parameters
    ----------
    sharing : {"shared", "private"}, default="shared"
        One LoRA for all tasks, or one per task.
    {classifier_parameters}
    {common_parameters}

    Attributes
    ----------
    {fitted_attributes}

    See Also
    --------
    PolyClassifier : tasks select among shared skills.
    CPolyClassifier : shared routed skills plus private ones.

    References
    ----------
    .. [1] Hu et al. "LoRA: Low-Rank Adaptation of Large Language Models." ICLR 2022.

    Examples
    --------
    >>> from skillfit import LoRAClassifier
    >>> X = [("great film", "movies"), ("awful plot", "movies"),
    ...      ("is this spam?", "sms"), ("call me later", "sms")]
    >>> y = ["pos", "neg", "spam", "ham"]
    >>> clf = LoRAClassifier(sharing="private", max_epochs=1, random_state=0)  # doctest: +SKIP
    >>> clf.fit(X, y).predict(X)  # doctest: +SKIP
    """


@seq2seq_doc("plain LoRA, shared by all tasks or private to each", "LoRAClassifier", "sharing")
@estimator_parameters
class LoRASeq2Seq(_LoRAMethod, SkillSeq2SeqBase):
    pass
