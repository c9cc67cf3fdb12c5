"""C-Poly: routed shared skills plus skills exclusive to each task."""

from __future__ import annotations

from numbers import Integral

from .._validation import Interval, Options
from ..skills import SkillConfig
from ._docs import fill_doc, seq2seq_doc
from ._params import estimator_parameters, parameter
from .classifier import SkillClassifierBase
from .seq2seq import SkillSeq2SeqBase


@estimator_parameters
class _CPolyMethod:
    """K routed shared skills plus E exclusive skills per task (Wang et al. 2023)."""

    n_shared: int = parameter(4, Interval(Integral, 0, None))
    n_exclusive: int = parameter(1, Interval(Integral, 0, None))
    n_splits: int = parameter(1, Interval(Integral, 1, None))
    combine: str = parameter("weight", Options("weight", "output"))

    def _check_method_params(self) -> None:
        if self.n_shared + self.n_exclusive == 0:
            raise ValueError(
                f"{type(self).__name__} needs at least one skill: n_shared + n_exclusive must be >= 1, "
                "got n_shared=0 and n_exclusive=0."
            )

    def _skill_config(self, n_tasks: int) -> SkillConfig:
        return self._skills(
            n_tasks,
            n_shared=self.n_shared,
            n_exclusive=self.n_exclusive,
            n_splits=self.n_splits,
            routing="poly" if self.n_shared > 0 else "none",
            combine=self.combine,
        )


CPOLY_PARAMETERS = """\
n_shared : int, default=4
        Shared, routed skills per adapted layer.
    n_exclusive : int, default=1
        Exclusive skills of each task per adapted layer; with more than one, each task
        learns softmax weights over its own.
    n_splits : int, default=1
        Routing heads; must divide the width of every adapted layer.
    combine : {"weight", "output"}, default="weight"
        Add exclusive skills to the routed shared ones in weight space (one low-rank
        product, as the authors' code) or in output space (two products)."""

CPOLY_REFERENCES = """\
.. [1] Wang, Sun, Jin, Wang, Fan, Xu, Du, Fan. "Customizable Combination of
       Parameter-Efficient Modules for Multi-Task Learning." ICLR 2024
       (arXiv:2312.03248)."""


@fill_doc(method_parameters=CPOLY_PARAMETERS, references=CPOLY_REFERENCES)
@estimator_parameters
class CPolyClassifier(_CPolyMethod, SkillClassifierBase):
    """Multi-task text classifier with C-Poly skills: shared, routed, and per task.

    Every adapted layer holds ``n_shared`` skills that all tasks select from with a
    learned router (as Poly) and ``n_exclusive`` skills owned by each task, which no
    other task's examples update [1]_. ``CPolyClassifier(n_exclusive=0)`` is Poly and
    ``CPolyClassifier(n_shared=0, n_exclusive=1)`` is one private LoRA per task.

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
    >>> from skillfit import CPolyClassifier
    >>> from skillfit.datasets import make_tiny_backbone
    >>> X = [("a great film", "movies"), ("a dull plot", "movies"),
    ...      ("win a free prize now", "sms"), ("see you at noon", "sms")]
    >>> y = ["pos", "neg", "spam", "ham"]
    >>> clf = CPolyClassifier(n_shared=2, n_exclusive=1, backbone=make_tiny_backbone(), max_epochs=1, random_state=0)
    >>> clf.fit(X, y).classes_
    array(['ham', 'neg', 'pos', 'spam'], dtype=object)

    A task's probabilities are zero outside the labels it was trained with:

    >>> (clf.predict_proba(X) > 0).astype(int)
    array([[0, 1, 1, 0],
           [0, 1, 1, 0],
           [1, 0, 0, 1],
           [1, 0, 0, 1]])

    The routers weigh the 2 shared skills (one head) in each of the 4 adapted layers;
    the exclusive skills are not routed:

    >>> clf.routing_weights_.shape
    (2, 8)
    """


@seq2seq_doc(
    "C-Poly skills: shared, routed, and per task",
    "CPolyClassifier",
    method_parameters=CPOLY_PARAMETERS,
    references=CPOLY_REFERENCES,
    example_parameters="n_shared=2, n_exclusive=1",
    backbone="t5",
)
@estimator_parameters
class CPolySeq2Seq(_CPolyMethod, SkillSeq2SeqBase):
    pass
