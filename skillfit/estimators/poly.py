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


POLY_PARAMETERS = """\
n_skills : int, default=8
        Shared skills per adapted layer.
    n_splits : int, default=1
        Routing heads; must divide the width of every adapted layer."""

POLY_REFERENCES = """\
.. [1] Ponti, Sordoni, Bengio, Reddy. "Combining Parameter-efficient Modules for
       Task-level Generalisation." EACL 2023 (arXiv:2202.13914).
    .. [2] Caccia, Ponti, Su, Pereira, Le Roux, Sordoni. "Multi-Head Adapter Routing for
       Cross-Task Generalization." NeurIPS 2023 (arXiv:2211.03831)."""


@fill_doc(method_parameters=POLY_PARAMETERS, references=POLY_REFERENCES)
@estimator_parameters
class PolyClassifier(_PolyMethod, SkillClassifierBase):
    """Multi-task text classifier with Polytropon skills (Poly, Poly-S / MHR).

    Every adapted layer holds ``n_skills`` LoRA skills shared by all tasks; each task
    learns a soft, sparse-leaning selection of them [1]_. With ``n_splits > 1`` the
    selection is made per block of the layer (multi-head routing [2]_).

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
    >>> from skillfit import PolyClassifier
    >>> from skillfit.datasets import make_tiny_backbone
    >>> X = [("a great film", "movies"), ("a dull plot", "movies"),
    ...      ("win a free prize now", "sms"), ("see you at noon", "sms")]
    >>> y = ["pos", "neg", "spam", "ham"]
    >>> clf = PolyClassifier(n_skills=4, n_splits=2, backbone=make_tiny_backbone(), max_epochs=1, random_state=0)
    >>> clf.fit(X, y).classes_
    array(['ham', 'neg', 'pos', 'spam'], dtype=object)
    >>> clf.tasks_
    array(['movies', 'sms'], dtype=object)
    >>> clf.predict_proba(X).shape
    (4, 4)

    Each task's weights over the 4 skills, per head, in each of the 4 adapted layers
    (query and value projections of the tiny BERT's 2 blocks):

    >>> import numpy as np
    >>> len(clf.layer_routing_weights_), clf.routing_weights_.shape
    (4, (2, 32))
    >>> weights = clf.layer_routing_weights_["backbone.encoder.layer.0.attention.self.query"]
    >>> weights.shape, np.allclose(weights.sum(axis=-1), 1)
    ((2, 2, 4), True)
    """


@seq2seq_doc(
    "Polytropon skills (Poly, Poly-S / MHR)",
    "PolyClassifier",
    method_parameters=POLY_PARAMETERS,
    references=POLY_REFERENCES,
    example_parameters="n_skills=4, n_splits=2",
)
@estimator_parameters
class PolySeq2Seq(_PolyMethod, SkillSeq2SeqBase):
    pass
