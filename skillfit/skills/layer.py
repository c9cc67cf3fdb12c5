"""The skill layer: a frozen linear layer plus a routed inventory of low-rank skills.

One class serves every method; :class:`~skillfit.skills.config.SkillConfig` says which.
For the tasks ``t`` of a batch (DESIGN.md §1)::

    A_t = concat_h (sum_k w[t,h,k] A[h,k] + sum_e v[t,h,e] A_ex[t,h,e])   # (d_in, r)
    B_t = concat_h (sum_k w[t,h,k] B[h,k] + sum_e v[t,h,e] B_ex[t,h,e])   # (r, d_out)
    y   = W0 x + s * x A_t B_t                                           # s = alpha / r

With ``combine="output"`` the shared and exclusive parts are two products:
``y = W0 x + s (x A_sh B_sh + x A_ex B_ex)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from .config import SkillConfig
from .context import TaskContext
from .routing import ExclusiveMixer, PolyRouter


def linear_features(layer: nn.Module) -> tuple[int, int]:
    """``(in_features, out_features)`` of an ``nn.Linear`` or a transformers ``Conv1D``."""
    if isinstance(layer, nn.Linear):
        return layer.in_features, layer.out_features
    if isinstance(layer, Conv1D):
        return layer.weight.shape[0], layer.weight.shape[1]
    raise TypeError(
        f"Skills can only wrap nn.Linear or transformers' Conv1D layers, got {type(layer).__name__}."
    )


class SkillLinear(nn.Module):
    """A frozen linear layer with a skill inventory and its routing.

    Parameters
    ----------
    base_layer : nn.Linear or transformers.pytorch_utils.Conv1D
        The layer to adapt; it is kept untouched and frozen.
    config : SkillConfig
        Inventory sizes and routing rule.
    context : TaskContext
        Shared holder of the current batch's task ids.
    name : str, default=""
        Qualified name of the layer in its model, used in error messages.

    Attributes
    ----------
    shared_A, shared_B : nn.Parameter or None
        Shared skills, shapes ``(H, K, d_in/H, r)`` and ``(H, K, r, d_out/H)``.
    exclusive_A, exclusive_B : nn.Parameter or None
        Exclusive skills, shapes ``(T, H, E, d_in/H, r)`` and ``(T, H, E, r, d_out/H)``.
    router : PolyRouter or None
        Task-skill routing over the shared skills (None for plain LoRA).
    exclusive_mixer : ExclusiveMixer or None
        Each task's weights over its exclusive skills.
    """

    def __init__(self, base_layer: nn.Module, config: SkillConfig, context: TaskContext, name: str = "") -> None:
        super().__init__()
        self.base_layer = base_layer
        self.config = config
        self.context = context
        self.in_features, self.out_features = linear_features(base_layer)
        heads = config.n_splits
        for width_name, width in (("input", self.in_features), ("output", self.out_features)):
            if width % heads:
                raise ValueError(
                    f"n_splits={heads} does not divide the {width_name} width {width} of layer "
                    f"{name or type(base_layer).__name__!r}; choose n_splits among the common "
                    f"divisors of {self.in_features} and {self.out_features}."
                )
        d_in, d_out, r = self.in_features // heads, self.out_features // heads, config.rank
        T, K, E = config.n_tasks, config.n_shared, config.n_exclusive
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()

        self.shared_A = nn.Parameter(torch.empty(heads, K, d_in, r)) if K else None
        self.shared_B = nn.Parameter(torch.zeros(heads, K, r, d_out)) if K else None
        self.router = PolyRouter(T, heads, K, config.temperature) if K and config.routing == "poly" else None
        self.exclusive_A = nn.Parameter(torch.empty(T, heads, E, d_in, r)) if E else None
        self.exclusive_B = nn.Parameter(torch.zeros(T, heads, E, r, d_out)) if E else None
        self.exclusive_mixer = ExclusiveMixer(T, heads, E) if E else None
        self.reset_skills()

    def reset_skills(self) -> None:
        """A as ``nn.Linear``'s default (Kaiming-uniform, a=sqrt(5)) per skill block, B = 0."""
        # kaiming_uniform_(a=sqrt(5)) on an (r, fan_in) block is U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        bound = 1.0 / math.sqrt(self.in_features // self.config.n_splits)
        for A, B in ((self.shared_A, self.shared_B), (self.exclusive_A, self.exclusive_B)):
            if A is not None:
                nn.init.uniform_(A, -bound, bound)
                nn.init.zeros_(B)

    @property
    def scale(self) -> float:
        return self.config.scale

    def task_factors(self, tasks: torch.Tensor, part: str = "all") -> tuple[torch.Tensor, torch.Tensor] | None:
        """Low-rank factors ``A_t (U, d_in, r)`` and ``B_t (U, r, d_out)`` of ``tasks``.

        Parameters
        ----------
        tasks : LongTensor of shape (U,)
            Task indices (distinct tasks of a batch, or any list of tasks).
        part : {"all", "shared", "exclusive"}
            Which skills to include; ``"all"`` sums both in weight space.

        Returns
        -------
        (A_t, B_t) or None if the layer holds no skills of that part.
        """
        blocks = []
        if part in ("all", "shared") and self.shared_A is not None:
            if self.router is not None:
                weights = self.router(tasks).to(self.shared_A.dtype)
            else:
                weights = self.shared_A.new_ones(len(tasks), self.config.n_splits, 1)
            blocks.append(
                (
                    torch.einsum("uhk,hkdr->uhdr", weights, self.shared_A),
                    torch.einsum("uhk,hkro->uhro", weights, self.shared_B),
                )
            )
        if part in ("all", "exclusive") and self.exclusive_A is not None:
            weights = self.exclusive_mixer(tasks, self.exclusive_A.dtype)
            blocks.append(
                (
                    torch.einsum("uhe,uhedr->uhdr", weights, self.exclusive_A[tasks]),
                    torch.einsum("uhe,uhero->uhro", weights, self.exclusive_B[tasks]),
                )
            )
        if not blocks:
            return None
        A = blocks[0][0] if len(blocks) == 1 else blocks[0][0] + blocks[1][0]
        B = blocks[0][1] if len(blocks) == 1 else blocks[0][1] + blocks[1][1]
        n_tasks, r = len(tasks), self.config.rank
        # Heads split the input rows of A and the output columns of B.
        A = A.reshape(n_tasks, self.in_features, r)
        B = B.permute(0, 2, 1, 3).reshape(n_tasks, r, self.out_features)
        return A, B

    @property
    def _parts(self) -> tuple[str, ...]:
        """The low-rank products the update is made of: one in weight space, two in output space."""
        return ("all",) if self.config.combine == "weight" else ("shared", "exclusive")

    def delta_weight(self, tasks: torch.Tensor) -> torch.Tensor:
        """Each task's full update ``s * A_t B_t`` in ``x @ W`` orientation, shape (U, d_in, d_out)."""
        delta = 0
        for part in self._parts:
            factors = self.task_factors(tasks, part)
            if factors is not None:
                delta = delta + factors[0] @ factors[1]
        return self.scale * delta

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        batch_tasks, example_group = self.context.groups(x.shape[0], x.device)
        rows = self.dropout(x).reshape(x.shape[0], -1, self.in_features)
        delta = None
        for part in self._parts:
            factors = self.task_factors(batch_tasks, part)
            if factors is None:
                continue
            A, B = factors
            rows_in = rows.to(A.dtype)
            update = torch.bmm(torch.bmm(rows_in, A[example_group]), B[example_group])
            delta = update if delta is None else delta + update
        return result + (self.scale * delta).reshape(result.shape).to(result.dtype)

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, rank={c.rank}, "
            f"n_shared={c.n_shared}, n_exclusive={c.n_exclusive}, n_splits={c.n_splits}, "
            f"n_tasks={c.n_tasks}, routing={c.routing!r}, combine={c.combine!r}"
        )
