"""Routers: turn task ids into weights over a skill inventory.

Every router is called the same way, ``router(tasks, context)``, and returns weights of
shape ``(U, H, K)`` for the ``U`` distinct tasks of a batch, so skills are mixed once per
task present, not per example. Task index ``-1`` stands for a task unseen in training
(``handle_unknown_task="average"``); each router only says what that task gets, and
:meth:`TaskContext.per_task <skillfit.skills.context.TaskContext.per_task>` puts it in
place. A router also owns how its weights mix the skills (:meth:`Router.mix`) and what
it keeps per task (:meth:`Router.per_task_parameters`, :meth:`Router.add_tasks`).
The math of each method is in ``docs/methods.md``.
"""

from __future__ import annotations

import torch
from torch import nn

from .context import TaskContext

# Guards the per-head normalisation against a zero sum (as in Polytropon's code).
NORMALISATION_EPS = 1e-12
UNKNOWN_TASK = -1
# Routing logits of a new task start as at initialisation (as peft's Poly router).
LOGIT_INIT_BOUND = 1e-3


class Router(nn.Module):
    """Task-wise weights over the shared skills, and the rule that mixes them.

    Subclasses implement ``forward(tasks, context) -> (U, H, K)``; the defaults below
    suit a router that mixes the skills' factors and keeps nothing per task.
    """

    def forward(self, tasks: torch.Tensor, context: TaskContext) -> torch.Tensor:
        """Weights of each task over the shared skills of each head.

        Parameters
        ----------
        tasks : LongTensor of shape (U,)
            The distinct tasks of the batch, -1 for a task unseen in training.
        context : TaskContext
            The model's task context: whether the batch holds task -1, and the task
            descriptions a gate reads.

        Returns
        -------
        Tensor of shape (U, H, K)
        """
        raise NotImplementedError

    def mix(self, weights: torch.Tensor, A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each task's factors from the skills ``A (H, K, d_in/H, r)``, ``B (H, K, r, d_out/H)``.

        Mixes the factors: ``A_t[h] = sum_k w[t,h,k] A[h,k]``, same for ``B_t``: a
        task's parameters are the weighted average of its skills' (Ponti et al. 2022,
        Eq. 3, with ``w`` already normalised), one average per head ``h`` (Caccia et al.
        2023, multi-head routing). Returns ``(U, H, d_in/H, r)`` and ``(U, H, r, d_out/H)``.
        """
        # Ponti et al. 2022, Eq. 3: sum_j phi_j z_ij / sum_j z_ij, per head.
        return torch.einsum("uhk,hkdr->uhdr", weights, A), torch.einsum("uhk,hkro->uhro", weights, B)

    def per_task_parameters(self) -> list[nn.Parameter]:
        """Parameters whose first dimension is the task."""
        return []

    def add_tasks(self, n_new: int) -> None:
        """Grow what the router keeps per task by ``n_new`` tasks."""

    def task_weights(self, context: TaskContext) -> torch.Tensor | None:
        """Evaluation weights of every task (for read-back), or None when they are not learned."""
        return None


class UniformRouter(Router):
    """Plain LoRA: the single shared skill gets weight 1, for every task.

    Holds no parameter and no buffer.
    """

    def __init__(self, n_splits: int) -> None:
        super().__init__()
        self.n_splits = n_splits

    def forward(self, tasks: torch.Tensor, context: TaskContext) -> torch.Tensor:
        return torch.ones(len(tasks), self.n_splits, 1, device=tasks.device)


class PolyRouter(Router):
    """Polytropon routing: one learned logit per task, head and skill.

    Training samples a relaxed Bernoulli per logit (Ponti et al. 2022, Eq. 2),
    evaluation uses its mean; either is normalised to sum to one over the skills of
    each head (Eq. 3 there; one routing per head as in Caccia et al. 2023's multi-head
    routing; ``docs/methods.md``, "Poly and Poly-S / MHR").
    An unknown task gets the mean of the learned tasks' evaluation weights.

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
        nn.init.uniform_(self.routing_logits, -LOGIT_INIT_BOUND, LOGIT_INIT_BOUND)

    def forward(self, tasks: torch.Tensor, context: TaskContext) -> torch.Tensor:
        if self.routing_logits.shape[-1] == 1:
            # One skill per head: normalisation makes its weight 1 whatever is sampled.
            return self.routing_logits.new_ones(len(tasks), *self.routing_logits.shape[1:])
        return context.per_task(
            tasks, lambda known: self._known_weights(known, context), lambda: self.eval_weights().mean(dim=0)
        )

    def _known_weights(self, tasks: torch.Tensor, context: TaskContext) -> torch.Tensor:
        logits = self.routing_logits[tasks]
        if self.training:
            # Relaxed Bernoulli (Gumbel-sigmoid) sample of the task-skill allocation:
            # sigma((Z + log u - log(1 - u)) / tau), u ~ U(0, 1).
            eps = torch.finfo(logits.dtype).eps
            table = context.uniform_noise(self, self.routing_logits.shape, logits)  # every task's sample, once per step
            uniform = table[tasks].clamp_(eps, 1.0 - eps)
            noise = torch.log(uniform) - torch.log1p(-uniform)
            weights = torch.sigmoid((logits + noise) / self.temperature)  # Ponti et al. 2022, Eq. 2
        else:
            weights = torch.sigmoid(logits)  # the relaxed Bernoulli's mean
        # Normalised over the skills of each head, as in Ponti et al. 2022, Eq. 3.
        return weights / (weights.sum(dim=-1, keepdim=True) + NORMALISATION_EPS)

    def eval_weights(self) -> torch.Tensor:
        """Evaluation-mode weights of every task, shape ``(n_tasks, n_splits, n_skills)``."""
        weights = torch.sigmoid(self.routing_logits.detach())
        return weights / (weights.sum(dim=-1, keepdim=True) + NORMALISATION_EPS)

    def per_task_parameters(self) -> list[nn.Parameter]:
        return [self.routing_logits]

    def add_tasks(self, n_new: int) -> None:
        new_logits = torch.empty(n_new, *self.routing_logits.shape[1:], device=self.routing_logits.device)
        nn.init.uniform_(new_logits, -LOGIT_INIT_BOUND, LOGIT_INIT_BOUND)
        self.routing_logits = grown(self.routing_logits, new_logits)

    def task_weights(self, context: TaskContext) -> torch.Tensor:
        return self.eval_weights()


class GateRouter(Router):
    """PEMT's gate: ``g = softmax(q_t W_g / tau)`` over experts, from task descriptions.

    Reads the description vectors ``q`` from ``context.task_descriptions``. ``W_g``
    starts at zero, so every task starts from the uniform mixture. An unknown task
    uses the mean description. Experts are mixed by their products, not their factors
    (Lin et al. 2024; ``docs/methods.md``, "PEMT").

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

    def forward(self, tasks: torch.Tensor, context: TaskContext) -> torch.Tensor:
        descriptions = context.task_descriptions
        queries = context.per_task(tasks, lambda known: descriptions[known], lambda: descriptions.mean(dim=0))
        # PEMT's gate over the experts (Lin et al. 2024).
        gate = torch.softmax(queries.to(self.gate_weight.dtype) @ self.gate_weight / self.temperature, dim=-1)
        return gate.unsqueeze(1)  # (U, 1, n_experts): one head

    def mix(self, weights: torch.Tensor, A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix the experts' products: ``x A_cat diag(g) B_cat = sum_k g_k x A_k B_k``.

        Returns the rank-``K r`` factors ``A_cat (U, H, d_in/H, K r)`` and
        ``diag(g) B_cat (U, H, K r, d_out/H)``.
        """
        n_tasks, (heads, n_experts, d_in, rank) = len(weights), A.shape
        A_cat = A.permute(0, 2, 1, 3).reshape(1, heads, d_in, n_experts * rank).expand(n_tasks, -1, -1, -1)
        B_cat = (weights.unsqueeze(-1).unsqueeze(-1) * B.unsqueeze(0)).reshape(n_tasks, heads, n_experts * rank, -1)
        return A_cat, B_cat

    def task_weights(self, context: TaskContext) -> torch.Tensor:
        descriptions = context.task_descriptions
        return self(torch.arange(len(descriptions), device=descriptions.device), context)


class ExclusiveMixer(nn.Module):
    """Weights of a task over its own ``n_exclusive`` skills (C-Poly), called as ``mixer(tasks, context)``.

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

    def forward(self, tasks: torch.Tensor, context: TaskContext) -> torch.Tensor:
        return context.per_task(tasks, self._known_weights, 0.0)

    def _known_weights(self, tasks: torch.Tensor) -> torch.Tensor:
        if self.exclusive_logits is None:
            return torch.ones(len(tasks), self.n_splits, 1, device=tasks.device)
        return torch.softmax(self.exclusive_logits[tasks], dim=-1)

    def mix(
        self, tasks: torch.Tensor, context: TaskContext, A: torch.Tensor, B: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each task's factors from its own skills ``A (T, H, E, d_in/H, r)``, ``B (T, H, E, r, d_out/H)``.

        Returns ``(U, H, d_in/H, r)`` and ``(U, H, r, d_out/H)``; zero for an unknown
        task. With one exclusive skill its weight is exactly 1: the task's skill is
        read as it is, with no mixing arithmetic.
        """
        if self.exclusive_logits is None:
            return context.per_task(tasks, lambda known: (A[known][:, :, 0], B[known][:, :, 0]), 0.0)
        weights = self(tasks, context).to(A.dtype)
        A, B = context.per_task(tasks, lambda known: (A[known], B[known]), 0.0)
        return torch.einsum("uhe,uhedr->uhdr", weights, A), torch.einsum("uhe,uhero->uhro", weights, B)

    def per_task_parameters(self) -> list[nn.Parameter]:
        """Parameters whose first dimension is the task."""
        return [] if self.exclusive_logits is None else [self.exclusive_logits]

    def add_tasks(self, n_new: int) -> None:
        """New tasks start from the uniform mixture of their exclusive skills."""
        if self.exclusive_logits is not None:
            self.exclusive_logits = grown(self.exclusive_logits, torch.zeros_like(self.exclusive_logits[:n_new]))


def grown(param: nn.Parameter, new_rows: torch.Tensor) -> nn.Parameter:
    """A new parameter: ``param``'s rows followed by ``new_rows``, same trainability."""
    rows = torch.cat([param.detach(), new_rows.to(dtype=param.dtype, device=param.device)])
    return nn.Parameter(rows, requires_grad=param.requires_grad)


def task_sparsity_loss(gates: torch.Tensor, target_states: torch.Tensor, expert_states: torch.Tensor) -> torch.Tensor:
    """PEMT's task-sparsity loss ``sum_s g_s (1 - cos(h_target, h_s))`` for each target.

    Gate mass on experts whose task state differs from the target's is penalised; the
    loss is zero when every expert's state equals the target's (Lin et al. 2024).

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
