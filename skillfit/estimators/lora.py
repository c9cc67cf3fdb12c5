"""LoRA baselines of the family: one adapter shared by all tasks, or one per task."""

from __future__ import annotations

from .._validation import Options
from ..backbones import DEFAULT_BACKBONE
from ..skills import SkillConfig
from ._docs import fill_doc
from .classifier import SkillClassifierBase


class _LoRAMethod:
    """One LoRA for all tasks (``"shared"``) or one per task (``"private"``), no routing."""

    _parameter_constraints = {"sharing": [Options("shared", "private")]}

    def _skill_config(self, n_tasks: int) -> SkillConfig:
        shared = self.sharing == "shared"
        return SkillConfig(
            n_tasks=n_tasks,
            n_shared=1 if shared else 0,
            n_exclusive=0 if shared else 1,
            rank=self.rank,
            alpha=self.alpha,
            routing="none",
            dropout=self.dropout,
        )


@fill_doc
class LoRAClassifier(_LoRAMethod, SkillClassifierBase):
    """Multi-task text classifier with plain LoRA, shared by all tasks or private to each.

    The two ends of the family: ``sharing="shared"`` trains one LoRA that every task
    uses (tasks differ only by their labels in the head); ``sharing="private"`` trains
    one LoRA per task and shares nothing but the frozen backbone.

    Parameters
    ----------
    sharing : {"shared", "private"}, default="shared"
        One LoRA for all tasks, or one per task.
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

    def __init__(
        self,
        *,
        sharing: str = "shared",
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
        self.sharing = sharing
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
