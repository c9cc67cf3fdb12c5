"""Polytropon (Poly) and its multi-head form, Poly-S / MHR."""

from __future__ import annotations

from numbers import Integral

from .._validation import Interval
from ..backbones import DEFAULT_BACKBONE
from ..skills import SkillConfig
from ._docs import fill_doc
from .classifier import SkillClassifierBase


class _PolyMethod:
    """K shared skills, mixed per task by a learned router, per head when ``n_splits > 1``."""

    _parameter_constraints = {"n_skills": [Interval(Integral, 1, None)], "n_splits": [Interval(Integral, 1, None)]}

    def _skill_config(self, n_tasks: int) -> SkillConfig:
        return SkillConfig(
            n_tasks=n_tasks,
            n_shared=self.n_skills,
            n_exclusive=0,
            n_splits=self.n_splits,
            rank=self.rank,
            alpha=self.alpha,
            routing="poly",
            dropout=self.dropout,
        )


@fill_doc
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

    def __init__(
        self,
        *,
        n_skills: int = 8,
        n_splits: int = 1,
        backbone: str = DEFAULT_BACKBONE,
        target_modules: list[str] | str | None = None,
        rank: int = 8,
        alpha: float = 16.0,
        dropout: float = 0.0,
        learning_rate: float = 2e-3,
        router_learning_rate: float = 0.05,
        weight_decay: float = 0.0,
        warmup_fraction: float = 0.1,
        max_epochs: int = 5,
        batch_size: int = 32,
        max_length: int = 128,
        pooling: str = "auto",
        device: str = "auto",
        random_state: int | None = None,
        verbose: int = 0,
        text_column: str = "text",
        task_column: str = "task",
    ) -> None:
        self.n_skills = n_skills
        self.n_splits = n_splits
        super().__init__(
            backbone=backbone,
            target_modules=target_modules,
            rank=rank,
            alpha=alpha,
            dropout=dropout,
            learning_rate=learning_rate,
            router_learning_rate=router_learning_rate,
            weight_decay=weight_decay,
            warmup_fraction=warmup_fraction,
            max_epochs=max_epochs,
            batch_size=batch_size,
            max_length=max_length,
            pooling=pooling,
            device=device,
            random_state=random_state,
            verbose=verbose,
            text_column=text_column,
            task_column=task_column,
        )
