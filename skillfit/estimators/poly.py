"""Polytropon (Poly) and its multi-head form, Poly-S / MHR."""

from __future__ import annotations

from numbers import Integral

from .._validation import Interval
from ..skills import SkillConfig
from ._docs import fill_doc, seq2seq_doc
from ._params import estimator_parameters, parameter
from .classifier import SkillClassifierBase
from .seq2seq import SkillSeq2SeqBase


@estimator_parameters
class _PolyMethod:
    """K shared skills, mixed per task by a learned router, per head when ``n_splits > 1``."""

    n_skills: int = parameter(8, Interval(Integral, 1, None))
    n_splits: int = parameter(1, Interval(Integral, 1, None))

    def _skill_config(self, n_tasks: int) -> SkillConfig:
        return self._skills(n_tasks, n_shared=self.n_skills, n_exclusive=0, n_splits=self.n_splits, routing="poly")


@fill_doc
@estimator_parameters
class PolyClassifier(_PolyMethod, SkillClassifierBase):
    """Multi-task text classifier with Polytropon skills (Poly, Poly-S / MHR).

    Every adapted layer holds ``n_skills`` LoRA skills shared by all tasks; each task
    learns a soft, sparse-leaning selection of them. With ``n_splits > 1`` the
    selection is made per block of the layer (multi-head routing).

    Parameters
    ----------
    n_skills : int, default=8
        Shared skills per adapted layer.
    n_splits : int, default=1
        Routing heads; must divide the width of every adapted layer.
    {classifier_parameters}
    {common_parameters}

    Attributes
    ----------
    {fitted_attributes}

    See Also
    --------
    CPolyClassifier : adds skills exclusive to each task.
    LoRAClassifier : one shared or one private LoRA.

    References
    ----------
    .. [1] Ponti, Sordoni, Bengio, Reddy. "Combining Modular Skills in Multitask
       Learning." arXiv:2202.13914, 2022.
    .. [2] Caccia et al. "Multi-Head Adapter Routing for Cross-Task Generalization."
       NeurIPS 2023.

    Examples
    --------
    >>> from skillfit import PolyClassifier
    >>> X = [("great film", "movies"), ("awful plot", "movies"),
    ...      ("is this spam?", "sms"), ("call me later", "sms")]
    >>> y = ["pos", "neg", "spam", "ham"]
    >>> clf = PolyClassifier(n_skills=4, max_epochs=1, random_state=0)  # doctest: +SKIP
    >>> clf.fit(X, y).predict(X)  # doctest: +SKIP
    """


@seq2seq_doc("Polytropon skills (Poly, Poly-S / MHR)", "PolyClassifier", "n_skills, n_splits")
@estimator_parameters
class PolySeq2Seq(_PolyMethod, SkillSeq2SeqBase):
    pass
