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
        """Rank of the exclusive skills."""
        return self.rank if self.exclusive_rank is None else self.exclusive_rank

    @property
    def scale(self) -> float:
        """The LoRA scale of the shared skills, ``s = alpha / rank``."""
        return self.alpha / self.rank

    @property
    def exclusive_scale(self) -> float:
        """The LoRA scale of the exclusive skills, ``alpha / exclusive_rank``."""
        return self.alpha / self.task_rank
