"""Routers: turn task ids into weights over a skill inventory.

A router returns weights of shape ``(n_batch_tasks, n_splits, n_skills)`` for the
distinct tasks of a batch, so skills are mixed once per task present, not per example.
Task index ``-1`` stands for a task unseen in training (``handle_unknown_task=
"average"``): it gets the average routing of the learned tasks and no exclusive skills.
"""

from __future__ import annotations

import torch
from torch import nn

# Guards the per-head normalisation against a zero sum (as in Polytropon's code).
NORMALISATION_EPS = 1e-12
UNKNOWN_TASK = -1


def _known_rows(table: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
    """Rows of ``table`` for ``tasks``, with unknown tasks (-1) reading row 0 as a placeholder."""
    return table[tasks.clamp_min(0)]


def _unknown(tasks: torch.Tensor) -> torch.Tensor:
    return (tasks < 0).view(-1, 1, 1)


class PolyRouter(nn.Module):
    """Polytropon routing: one learned logit per task, head and skill.

    Training samples a relaxed Bernoulli per logit, evaluation uses its mean; either is
    normalised to sum to one over the skills of each head (DESIGN.md §1; Ponti et al.
    2022 for the router, Caccia et al. 2023 for heads).

    Parameters
    ----------
    n_tasks, n_splits, n_skills : int
        Shape of the logit table ``Z``.
    temperature : float
        Temperature ``tau`` of the relaxed Bernoulli.
    """

    def __init__(self, n_tasks: int, n_splits: int, n_skills: int, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = temperature
        self.routing_logits = nn.Parameter(torch.empty(n_tasks, n_splits, n_skills))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.routing_logits, -1e-3, 1e-3)

    def forward(self, tasks: torch.Tensor, has_unknown: bool = False) -> torch.Tensor:
        logits = _known_rows(self.routing_logits, tasks) if has_unknown else self.routing_logits[tasks]
        if logits.shape[-1] == 1:
            # One skill per head: normalisation makes its weight 1 whatever is sampled.
            return torch.ones_like(logits)
        if self.training:
            # Relaxed Bernoulli sample: sigma((Z + log u - log(1 - u)) / tau).
            eps = torch.finfo(logits.dtype).eps
            uniform = torch.rand_like(logits).clamp_(eps, 1.0 - eps)
            noise = torch.log(uniform) - torch.log1p(-uniform)
            weights = torch.sigmoid((logits + noise) / self.temperature)
        else:
            weights = torch.sigmoid(logits)
        weights = weights / (weights.sum(dim=-1, keepdim=True) + NORMALISATION_EPS)
        if has_unknown:
            weights = torch.where(_unknown(tasks), self.eval_weights().mean(dim=0), weights)
        return weights

    def eval_weights(self) -> torch.Tensor:
        """Evaluation-mode weights of every task, shape ``(n_tasks, n_splits, n_skills)``."""
        weights = torch.sigmoid(self.routing_logits.detach())
        return weights / (weights.sum(dim=-1, keepdim=True) + NORMALISATION_EPS)


class GateRouter(nn.Module):
    """PEMT's gate: ``g = softmax(q_t W_g / tau)`` over experts, from task descriptions.

    ``W_g`` starts at zero, so every task starts from the uniform mixture. An unknown
    task uses the mean description.

    Parameters
    ----------
    n_experts : int
        Number of experts (skills) gated.
    description_dim : int
        Width of the description vectors ``q``.
    temperature : float
        Softmax temperature ``tau``.
    """

    def __init__(self, n_experts: int, description_dim: int, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = temperature
        self.gate_weight = nn.Parameter(torch.zeros(description_dim, n_experts))

    def forward(self, tasks: torch.Tensor, descriptions: torch.Tensor, has_unknown: bool = False) -> torch.Tensor:
        queries = _known_rows(descriptions, tasks) if has_unknown else descriptions[tasks]
        if has_unknown:
            queries = torch.where((tasks < 0).view(-1, 1), descriptions.mean(dim=0), queries)
        gate = torch.softmax(queries.to(self.gate_weight.dtype) @ self.gate_weight / self.temperature, dim=-1)
        return gate.unsqueeze(1)  # (U, 1, n_experts): one head


class ExclusiveMixer(nn.Module):
    """Weights of a task over its own ``n_exclusive`` skills (C-Poly).

    A softmax of learned per-task logits, initialised uniform. With one exclusive
    skill per task there is nothing to learn and the weight is exactly 1. Unknown
    tasks get weight 0: they have no exclusive skills.
    """

    def __init__(self, n_tasks: int, n_splits: int, n_exclusive: int) -> None:
        super().__init__()
        self.n_splits = n_splits
        if n_exclusive > 1:
            self.exclusive_logits = nn.Parameter(torch.zeros(n_tasks, n_splits, n_exclusive))
        else:
            self.register_parameter("exclusive_logits", None)

    def forward(self, tasks: torch.Tensor, dtype: torch.dtype, has_unknown: bool = False) -> torch.Tensor:
        if self.exclusive_logits is None:
            weights = torch.ones(len(tasks), self.n_splits, 1, device=tasks.device, dtype=dtype)
        else:
            logits = _known_rows(self.exclusive_logits, tasks) if has_unknown else self.exclusive_logits[tasks]
            weights = torch.softmax(logits, dim=-1).to(dtype)
        if has_unknown:
            weights = weights.masked_fill(_unknown(tasks), 0.0)
        return weights


def task_sparsity_loss(gates: torch.Tensor, target_states: torch.Tensor, expert_states: torch.Tensor) -> torch.Tensor:
    """PEMT's task-sparsity loss ``sum_s g_s (1 - cos(h_target, h_s))`` for each target.

    Gate mass on experts whose task state differs from the target's is penalised; the
    loss is zero when every expert's state equals the target's.

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
    """
    similarity = torch.nn.functional.cosine_similarity(target_states.unsqueeze(1), expert_states.unsqueeze(0), dim=-1)
    return (gates * (1.0 - similarity)).sum(dim=-1)
