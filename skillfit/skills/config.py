"""The configuration of a skill inventory: one frozen record shared by every method."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ROUTINGS = ("poly", "none", "gate")
COMBINES = ("weight", "output")


@dataclass(frozen=True)
class SkillConfig:
    """What one adapted linear layer holds and how a task picks from it.

    Every method of the family is a choice of these numbers (``docs/methods.md``):

    ========================  =========  ===========  =========
    method                    n_shared   n_exclusive  routing
    ========================  =========  ===========  =========
    LoRA, shared              1          0            "none"
    LoRA, private             0          1            "none"
    Poly / Poly-S (MHR)       K          0            "poly"
    C-Poly                    K          E            "poly"
    MTLoRA (top blocks)       1          1            "none"
    PEMT, stage 2             T          1            "gate"
    ========================  =========  ===========  =========

    Parameters
    ----------
    n_tasks : int
        Number of tasks ``T`` the router and the exclusive skills are sized for.
    n_shared : int
        Shared skills ``K`` per head, routed by task.
    n_exclusive : int
        Exclusive skills ``E`` owned by each task.
    n_splits : int
        Routing heads ``H``; the input and output widths are cut in ``H`` blocks.
    rank : int
        Rank ``r`` of every skill.
    alpha : float
        LoRA scale numerator: the update is multiplied by ``alpha / rank``.
    routing : {"poly", "none", "gate"}
        ``"poly"`` learns task-skill logits (Polytropon) and mixes the skills' A and B
        factors; ``"none"`` gives the shared skill weight 1 (plain LoRA, only valid
        with ``n_shared <= 1``); ``"gate"`` mixes the skills' products with
        ``softmax(q_t W_g / tau)`` from task-description vectors ``q_t`` (PEMT).
    combine : {"weight", "output"}
        Where C-Poly adds exclusive skills to shared ones: in weight space (one
        low-rank product) or in output space (two products summed).
    dropout : float
        Dropout applied to the adapter input.
    temperature : float
        Temperature of the relaxed Bernoulli (``"poly"``) or of the gate softmax
        (``"gate"``).
    exclusive_rank : int or None
        Rank of the exclusive skills; None means ``rank``. Must equal ``rank`` when
        ``combine="weight"`` adds the two kinds of factors.
    description_dim : int
        Width of the task-description vectors that drive a ``"gate"`` router.

    Raises
    ------
    ValueError
        If a number is out of range or the numbers do not make one of the methods:
        ``routing="none"`` with ``n_shared > 1``, no skill at all, ``combine="weight"``
        with two different ranks, or a ``"gate"`` router with several heads or without
        ``description_dim``.

    See Also
    --------
    skillfit.skills.SkillLinear : The layer that holds the inventory this record describes.
    skillfit.skills.inject_skills : Put one such layer in place of each target linear layer.
    skillfit.PolyClassifier : The estimator of Poly and Poly-S (``n_shared=K``).
    skillfit.CPolyClassifier : The estimator of C-Poly (``n_exclusive=E``).

    Notes
    -----
    The record is frozen and holds plain Python numbers (NumPy scalars are converted),
    so it is written as JSON with a saved model; ``dataclasses.replace`` makes a
    changed copy. The skills' update is scaled by ``alpha / rank`` as in LoRA [1]_;
    the routings are Polytropon's [2]_ (with heads, multi-head routing [3]_) and
    PEMT's gate [6]_, and exclusive skills are C-Poly's [4]_ (MTLoRA's task-specific
    modules [5]_ with ``combine="output"``).

    References
    ----------
    .. [1] Hu, Shen, Wallis, Allen-Zhu, Li, Wang, Wang, Chen. "LoRA: Low-Rank Adaptation of
       Large Language Models." ICLR 2022 (arXiv:2106.09685).
    .. [2] Ponti, Sordoni, Bengio, Reddy. "Combining Parameter-efficient Modules for
       Task-level Generalisation." EACL 2023 (arXiv:2202.13914).
    .. [3] Caccia, Ponti, Su, Pereira, Le Roux, Sordoni. "Multi-Head Adapter Routing for
       Cross-Task Generalization." NeurIPS 2023 (arXiv:2211.03831).
    .. [4] Wang, Sun, Jin, Wang, Fan, Xu, Du, Fan. "Customizable Combination of
       Parameter-Efficient Modules for Multi-Task Learning." ICLR 2024 (arXiv:2312.03248).
    .. [5] Agiza, Neseem, Reda. "MTLoRA: Low-Rank Adaptation Approach for Efficient
       Multi-Task Learning." CVPR 2024 (arXiv:2403.20320).
    .. [6] Lin, Fu, Liu, Li, Sun. "PEMT: Multi-Task Correlation Guided
       Mixture-of-Experts Enables Parameter-Efficient Transfer Learning." Findings of
       ACL 2024 (arXiv:2402.15082).

    Examples
    --------
    C-Poly with four shared skills routed in two heads and one exclusive skill per task:

    >>> from dataclasses import replace
    >>> from skillfit.skills import SkillConfig
    >>> config = SkillConfig(n_tasks=3, n_shared=4, n_exclusive=1, n_splits=2, rank=4, alpha=8.0)
    >>> config.scale, config.task_rank
    (2.0, 4)
    >>> replace(config, n_exclusive=0).n_exclusive   # Poly-S: a changed copy
    0

    Plain LoRA gives its one shared skill weight 1, so it cannot route several:

    >>> SkillConfig(n_tasks=3, n_shared=2, routing="none")
    Traceback (most recent call last):
    ...
    ValueError: routing='none' gives every shared skill weight 1; use n_shared <= 1 or routing='poly'.
    """

    n_tasks: int
    n_shared: int = 1
    n_exclusive: int = 0
    n_splits: int = 1
    rank: int = 8
    alpha: float = 8.0
    routing: Literal["poly", "none", "gate"] = "poly"
    combine: Literal["weight", "output"] = "weight"
    dropout: float = 0.0
    temperature: float = 1.0
    exclusive_rank: int | None = None
    description_dim: int = 0

    def __post_init__(self) -> None:
        # Numpy scalars (what a search passes) become Python numbers: the config is written as JSON.
        for name, value in vars(self).items():
            if hasattr(value, "item") and not isinstance(value, (bool, int, float, str)):
                object.__setattr__(self, name, value.item())
        positive = {"n_tasks": self.n_tasks, "n_splits": self.n_splits, "rank": self.rank}
        for name, value in positive.items():
            if int(value) != value or value < 1:
                raise ValueError(f"SkillConfig.{name} must be an integer >= 1, got {value!r}.")
        for name in ("n_shared", "n_exclusive"):
            value = getattr(self, name)
            if int(value) != value or value < 0:
                raise ValueError(f"SkillConfig.{name} must be an integer >= 0, got {value!r}.")
        if self.n_shared + self.n_exclusive == 0:
            raise ValueError("A skill inventory needs at least one skill: n_shared + n_exclusive >= 1.")
        if self.routing not in ROUTINGS:
            raise ValueError(f"SkillConfig.routing must be one of {ROUTINGS}, got {self.routing!r}.")
        if self.routing == "none" and self.n_shared > 1:
            raise ValueError("routing='none' gives every shared skill weight 1; use n_shared <= 1 or routing='poly'.")
        if self.combine not in COMBINES:
            raise ValueError(f"SkillConfig.combine must be one of {COMBINES}, got {self.combine!r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"SkillConfig.dropout must be in [0, 1), got {self.dropout!r}.")
        if self.temperature <= 0:
            raise ValueError(f"SkillConfig.temperature must be > 0, got {self.temperature!r}.")
        if self.exclusive_rank is not None and (int(self.exclusive_rank) != self.exclusive_rank or self.exclusive_rank < 1):
            raise ValueError(f"SkillConfig.exclusive_rank must be an integer >= 1 or None, got {self.exclusive_rank!r}.")
        if self.combine == "weight" and self.n_shared and self.n_exclusive and self.task_rank != self.rank:
            raise ValueError(
                "combine='weight' adds shared and exclusive factors, so their ranks must match; "
                f"got rank={self.rank}, exclusive_rank={self.exclusive_rank}. Use combine='output'."
            )
        if self.routing == "gate":
            if self.n_splits != 1:
                raise ValueError("routing='gate' mixes whole skills: use n_splits=1.")
            if self.description_dim < 1:
                raise ValueError("routing='gate' needs description_dim >= 1 (the width of task descriptions).")
            if self.combine != "output" and self.n_exclusive:
                raise ValueError("routing='gate' mixes products; add exclusive skills with combine='output'.")

    @property
    def task_rank(self) -> int:
        """Rank of the exclusive skills: ``exclusive_rank``, or ``rank`` when that is None.

        MTLoRA gives its task-specific modules a rank of their own (Agiza et al. 2024); C-Poly's
        exclusive skills (Wang et al. 2024) share the shared skills' rank unless they are combined in
        output space.

        See Also
        --------
        skillfit.skills.SkillConfig.exclusive_scale : The LoRA scale that goes with this rank.
        skillfit.MTLoRAClassifier : Its ``task_rank`` parameter sets this rank.


        Examples
        --------
        >>> from skillfit.skills import SkillConfig
        >>> SkillConfig(n_tasks=2, n_exclusive=1, rank=8).task_rank
        8
        >>> SkillConfig(n_tasks=2, n_exclusive=1, rank=8, exclusive_rank=4, combine="output").task_rank
        4
        """
        return self.rank if self.exclusive_rank is None else self.exclusive_rank

    @property
    def scale(self) -> float:
        """The LoRA scale of the shared skills, ``s = alpha / rank``.

        The update ``x A_t B_t`` is multiplied by it, as LoRA scales ``Delta W x`` by
        ``alpha / r`` (Hu et al. 2022), so that changing the rank does not change the step size.

        See Also
        --------
        skillfit.skills.SkillConfig.exclusive_scale : The scale of the exclusive skills.
        skillfit.skills.SkillLinear.task_products : The low-rank terms, each with its scale.


        Examples
        --------
        >>> from skillfit.skills import SkillConfig
        >>> SkillConfig(n_tasks=2, rank=4, alpha=8.0).scale
        2.0
        """
        return self.alpha / self.rank

    @property
    def exclusive_scale(self) -> float:
        """The LoRA scale of the exclusive skills, ``alpha / exclusive_rank``.

        It multiplies the exclusive skills' product when it is a term of its own
        (``combine="output"``, MTLoRA's task-specific modules (Agiza et al. 2024)); the rank is
        :attr:`~skillfit.skills.SkillConfig.task_rank` and the scale follows LoRA (Hu et al. 2022).

        See Also
        --------
        skillfit.skills.SkillConfig.scale : The scale of the shared skills.
        skillfit.skills.SkillConfig.task_rank : The rank this scale divides by.


        Examples
        --------
        >>> from skillfit.skills import SkillConfig
        >>> config = SkillConfig(n_tasks=2, n_exclusive=1, rank=8, exclusive_rank=4, alpha=8.0, combine="output")
        >>> config.scale, config.exclusive_scale
        (1.0, 2.0)
        """
        return self.alpha / self.task_rank
