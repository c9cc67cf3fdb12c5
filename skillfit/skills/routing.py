"""Routers: turn task ids into weights over a skill inventory.

A router returns weights of shape ``(n_batch_tasks, n_splits, n_skills)`` for the
distinct tasks of a batch, so skills are mixed once per task present, not per example.
"""

from __future__ import annotations

import torch
from torch import nn

# Guards the per-head normalisation against a zero sum (as in Polytropon's code).
NORMALISATION_EPS = 1e-12


class PolyRouter(nn.Module):
    """Polytropon routing: one learned logit per task, head and skill.

    Training samples a relaxed Bernoulli per logit, evaluation uses its mean; either is
    normalised to sum to one over the skills of each head (DESIGN.md §1, Ponti et al.
    2022, eq. 4; Caccia et al. 2023 for heads).

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

    def forward(self, tasks: torch.Tensor) -> torch.Tensor:
        logits = self.routing_logits[tasks]
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
        return weights / (weights.sum(dim=-1, keepdim=True) + NORMALISATION_EPS)

    def eval_weights(self) -> torch.Tensor:
        """Evaluation-mode weights of every task, shape ``(n_tasks, n_splits, n_skills)``."""
        weights = torch.sigmoid(self.routing_logits.detach())
        return weights / (weights.sum(dim=-1, keepdim=True) + NORMALISATION_EPS)


class ExclusiveMixer(nn.Module):
    """Weights of a task over its own ``n_exclusive`` skills (C-Poly).

    A softmax of learned per-task logits, initialised uniform. With one exclusive
    skill per task there is nothing to learn and the weight is exactly 1.
    """

    def __init__(self, n_tasks: int, n_splits: int, n_exclusive: int) -> None:
        super().__init__()
        self.n_splits = n_splits
        self.n_exclusive = n_exclusive
        if n_exclusive > 1:
            self.exclusive_logits = nn.Parameter(torch.zeros(n_tasks, n_splits, n_exclusive))
        else:
            self.register_parameter("exclusive_logits", None)

    def forward(self, tasks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if self.exclusive_logits is None:
            return torch.ones(len(tasks), self.n_splits, 1, device=tasks.device, dtype=dtype)
        return torch.softmax(self.exclusive_logits[tasks], dim=-1).to(dtype)
