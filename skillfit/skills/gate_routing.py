"""PEMT's routing: a gate over experts from task descriptions, and its task-sparsity loss."""

from __future__ import annotations

import torch
from torch import nn

from .context import TaskContext
from .router_base import Router


class GateRouter(Router):
    """PEMT's gate: ``g = softmax(q_t W_g / tau)`` over experts, from task descriptions.

    Reads the description vectors ``q`` from ``context.task_descriptions``. ``W_g``
    starts at zero, so every task starts from the uniform mixture. An unknown task
    uses the mean description. Experts are mixed by their products, not their factors
    (Lin et al. 2024 [1]_; ``docs/methods.md``, "PEMT").

    Parameters
    ----------
    n_experts : int
        Number of experts (skills) gated.
    description_dim : int
        Width of the description vectors ``q``.
    temperature : float, default=1.0
        Softmax temperature ``tau``.

    Attributes
    ----------
    gate_weight : nn.Parameter of shape (description_dim, n_experts)
        The gate's projection ``W_g``, initialised at zero.

    See Also
    --------
    skillfit.skills.gate_experts : Puts a gate in every layer of a model.
    skillfit.skills.task_sparsity_loss : PEMT's penalty on the gates.
    skillfit.skills.gate_weights : Reads the gates back from a model.
    skillfit.PEMTClassifier : The estimator built on this router.

    References
    ----------
    .. [1] Lin, Fu, Liu, Li, Sun. "PEMT: Multi-Task Correlation Guided
       Mixture-of-Experts Enables Parameter-Efficient Transfer Learning." Findings of ACL 2024
       (arXiv:2402.15082).

    Examples
    --------
    >>> import torch
    >>> from skillfit.skills import GateRouter, TaskContext
    >>> router = GateRouter(n_experts=3, description_dim=4)
    >>> context = TaskContext()
    >>> context.task_descriptions = torch.randn(2, 4)  # one description per task
    >>> gate = router(torch.tensor([0, 1]), context)
    >>> gate.shape
    torch.Size([2, 1, 3])
    >>> torch.allclose(gate, torch.full((2, 1, 3), 1 / 3))  # W_g = 0: the uniform mixture
    True
    """

    def __init__(self, n_experts: int, description_dim: int, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = temperature
        self.gate_weight = nn.Parameter(torch.zeros(description_dim, n_experts))

    def forward(self, tasks: torch.Tensor, context: TaskContext) -> torch.Tensor:
        """Each task's gate over the experts, ``softmax(q_t W_g / tau)``, as one head."""
        descriptions = context.task_descriptions
        queries = context.per_task(tasks, lambda known: descriptions[known], lambda: descriptions.mean(dim=0))
        # PEMT's gate over the experts (Lin et al. 2024).
        gate = torch.softmax(queries.to(self.gate_weight.dtype) @ self.gate_weight / self.temperature, dim=-1)
        return gate.unsqueeze(1)  # (U, 1, n_experts): one head

    def mix(self, weights: torch.Tensor, A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix the experts' products: ``x A_cat diag(g) B_cat = sum_k g_k x A_k B_k``."""
        n_tasks, (heads, n_experts, d_in, rank) = len(weights), A.shape
        A_cat = A.permute(0, 2, 1, 3).reshape(1, heads, d_in, n_experts * rank).expand(n_tasks, -1, -1, -1)
        B_cat = (weights.unsqueeze(-1).unsqueeze(-1) * B.unsqueeze(0)).reshape(n_tasks, heads, n_experts * rank, -1)
        return A_cat, B_cat

    def task_weights(self, context: TaskContext) -> torch.Tensor:
        """Every task's gate over the experts (for read-back)."""
        descriptions = context.task_descriptions
        return self(torch.arange(len(descriptions), device=descriptions.device), context)


def task_sparsity_loss(gates: torch.Tensor, target_states: torch.Tensor, expert_states: torch.Tensor) -> torch.Tensor:
    """PEMT's task-sparsity loss ``sum_s g_s (1 - cos(h_target, h_s))`` for each target.

    Gate mass on experts whose task state differs from the target's is penalised; the
    loss is zero when every expert's state equals the target's (Lin et al. 2024 (Lin et al. 2024)).

    Parameters
    ----------
    gates : Tensor of shape (U, n_experts)
        Each target's gate over the experts (averaged over layers).
    target_states : Tensor of shape (U, dim)
        The targets' task states.
    expert_states : Tensor of shape (n_experts, dim)
        The experts' task states.

    Returns
    -------
    Tensor of shape (U,)
        Each target's loss.

    See Also
    --------
    skillfit.skills.GateRouter : The gates penalised.
    skillfit.PEMTClassifier : Adds this loss, weighted by ``sparsity_weight``.


    Examples
    --------
    The first target spreads its gate over an expert like it and one orthogonal to
    it; the second puts all of it on the expert like it:

    >>> import torch
    >>> from skillfit.skills import task_sparsity_loss
    >>> gates = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    >>> targets = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    >>> experts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> task_sparsity_loss(gates, targets, experts)
    tensor([0.5000, 0.0000])
    """
    similarity = torch.nn.functional.cosine_similarity(target_states.unsqueeze(1), expert_states.unsqueeze(0), dim=-1)
    return (gates * (1.0 - similarity)).sum(dim=-1)
