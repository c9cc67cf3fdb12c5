"""Routers: turn task ids into weights over a skill inventory.

Every router is called the same way, ``router(tasks, context)``, and returns weights of
shape ``(U, H, K)`` for the ``U`` distinct tasks of a batch, so skills are mixed once per
task present, not per example. Task index ``-1`` stands for a task unseen in training
(``handle_unknown_task="average"``); each router only says what that task gets, and
:meth:`TaskContext.per_task <skillfit.skills.context.TaskContext.per_task>` puts it in
place. A router also owns how its weights mix the skills (:meth:`Router.mix`) and what
it keeps per task (:meth:`Router.per_task_parameters`, :meth:`Router.add_tasks`).
The math of each method is in ``docs/methods.md``. Here: plain LoRA's
:class:`UniformRouter` and Poly's :class:`PolyRouter`; the base class is in
``router_base.py``, PEMT's gate in ``gate_routing.py`` and C-Poly's exclusive mixer in
``exclusive.py``, all re-exported here.
"""

from __future__ import annotations

import torch
from torch import nn

from .context import TaskContext
from .router_base import (  # noqa: F401 (re-exported)
    LOGIT_INIT_BOUND,
    NORMALISATION_EPS,
    UNKNOWN_TASK,
    Router,
    grown,
)

class UniformRouter(Router):
    """Plain LoRA: the single shared skill gets weight 1, for every task.

    Holds no parameter and no buffer: every task, known or not, gets the one shared
    LoRA [1]_.

    Parameters
    ----------
    n_splits : int
        Number of heads ``H``; each gets weight 1 on its single skill.

    See Also
    --------
    skillfit.skills.PolyRouter : Learned routing over several skills.
    skillfit.LoRAClassifier : The estimator whose shared LoRA uses this router.

    References
    ----------
    .. [1] Hu, Shen, Wallis, Allen-Zhu, Li, Wang, Wang, Chen. "LoRA: Low-Rank Adaptation of
       Large Language Models." ICLR 2022 (arXiv:2106.09685).

    Examples
    --------
    >>> import torch
    >>> from skillfit.skills import TaskContext, UniformRouter
    >>> router = UniformRouter(n_splits=2)
    >>> weights = router(torch.tensor([0, 1, 4]), TaskContext())
    >>> weights.shape, bool((weights == 1).all())
    (torch.Size([3, 2, 1]), True)
    >>> list(router.parameters())
    []
    """

    def __init__(self, n_splits: int) -> None:
        super().__init__()
        self.n_splits = n_splits

    def forward(self, tasks: torch.Tensor, context: TaskContext) -> torch.Tensor:
        """Weight 1 on the single skill of each head, for every task."""
        return torch.ones(len(tasks), self.n_splits, 1, device=tasks.device)


class PolyRouter(Router):
    """Polytropon routing: one learned logit per task, head and skill.

    Training samples a relaxed Bernoulli per logit (Ponti et al. 2022 [1]_, Eq. 2),
    evaluation uses its mean; either is normalised to sum to one over the skills of
    each head (Eq. 3 there; one routing per head as in Caccia et al. 2023's multi-head
    routing [2]_; ``docs/methods.md``, "Poly and Poly-S / MHR").
    An unknown task gets the mean of the learned tasks' evaluation weights.

    Parameters
    ----------
    n_tasks, n_splits, n_skills : int
        Shape of the logit table ``Z``.
    temperature : float, default=1.0
        Temperature ``tau`` of the relaxed Bernoulli.

    Attributes
    ----------
    routing_logits : nn.Parameter of shape (n_tasks, n_splits, n_skills)
        The logit table ``Z``, initialised uniform in ``[-1e-3, 1e-3]``.

    See Also
    --------
    skillfit.skills.Router : The interface every router follows.
    skillfit.skills.routing_weights : Reads the learned weights back from a model.
    skillfit.PolyClassifier : The estimator built on this router.

    References
    ----------
    .. [1] Ponti, Sordoni, Bengio, Reddy. "Combining Parameter-efficient Modules for
       Task-level Generalisation." EACL 2023 (arXiv:2202.13914).
    .. [2] Caccia, Ponti, Su, Pereira, Le Roux, Sordoni. "Multi-Head Adapter Routing for
       Cross-Task Generalization." NeurIPS 2023 (arXiv:2211.03831).

    Examples
    --------
    >>> import torch
    >>> from skillfit.skills import PolyRouter, TaskContext
    >>> _ = torch.manual_seed(0)
    >>> router = PolyRouter(n_tasks=3, n_splits=2, n_skills=4)
    >>> context = TaskContext()
    >>> sample = router(torch.tensor([0, 2]), context)  # training: a relaxed Bernoulli sample
    >>> sample.shape
    torch.Size([2, 2, 4])
    >>> torch.allclose(sample.sum(-1), torch.ones(2, 2))
    True

    In evaluation, an unknown task (-1) gets the mean of the tasks' weights:

    >>> _ = router.eval()
    >>> with context.tasks([-1, 1]):
    ...     weights = router(torch.tensor([-1, 1]), context)
    >>> torch.allclose(weights[0], router.eval_weights().mean(dim=0))
    True
    >>> torch.allclose(weights[1], router.eval_weights()[1])
    True
    """

    def __init__(self, n_tasks: int, n_splits: int, n_skills: int, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = temperature
        self.routing_logits = nn.Parameter(torch.empty(n_tasks, n_splits, n_skills))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw the routing logits anew, uniform in ``[-1e-3, 1e-3]`` (in place).

        Near-zero logits make every task start from a near-uniform routing over the
        skills, as peft's Poly router and the reference code of Polytropon do.

        See Also
        --------
        skillfit.skills.PolyRouter.eval_weights : The routing the logits give.
        skillfit.skills.SkillLinear.reset_skills : Draws the skills anew.

        Examples
        --------
        >>> import torch
        >>> from skillfit.skills import PolyRouter
        >>> router = PolyRouter(n_tasks=2, n_splits=1, n_skills=3)
        >>> with torch.no_grad():
        ...     _ = router.routing_logits.fill_(5.0)
        >>> router.reset_parameters()
        >>> bool(router.routing_logits.abs().max() <= 1e-3)
        True
        """
        nn.init.uniform_(self.routing_logits, -LOGIT_INIT_BOUND, LOGIT_INIT_BOUND)

    def forward(self, tasks: torch.Tensor, context: TaskContext) -> torch.Tensor:
        """Each task's weights over the skills of each head."""
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
        """Evaluation-mode weights of every task, shape ``(n_tasks, n_splits, n_skills)``.

        The relaxed Bernoulli's mean ``sigma(Z)``, normalised over the skills of each
        head (Ponti et al. 2022, Eq. 3), detached from the graph.

        Returns
        -------
        Tensor of shape (n_tasks, n_splits, n_skills)
            Weights summing to one over the skills of each head.

        See Also
        --------
        skillfit.skills.PolyRouter.task_weights : The same weights, through the router interface.
        skillfit.skills.routing_weights : Reads them back from every layer of a model.

        Examples
        --------
        At initialisation every task routes almost uniformly:

        >>> import torch
        >>> from skillfit.skills import PolyRouter
        >>> router = PolyRouter(n_tasks=3, n_splits=2, n_skills=4)
        >>> weights = router.eval_weights()
        >>> weights.shape
        torch.Size([3, 2, 4])
        >>> torch.allclose(weights, torch.full((3, 2, 4), 0.25), atol=1e-3)
        True
        """
        weights = torch.sigmoid(self.routing_logits.detach())
        return weights / (weights.sum(dim=-1, keepdim=True) + NORMALISATION_EPS)

    def per_task_parameters(self) -> list[nn.Parameter]:
        """Parameters whose first dimension is the task: the routing logits."""
        return [self.routing_logits]

    def add_tasks(self, n_new: int) -> None:
        """Add ``n_new`` rows of routing logits, drawn as at initialisation."""
        new_logits = torch.empty(n_new, *self.routing_logits.shape[1:], device=self.routing_logits.device)
        nn.init.uniform_(new_logits, -LOGIT_INIT_BOUND, LOGIT_INIT_BOUND)
        self.routing_logits = grown(self.routing_logits, new_logits)

    def task_weights(self, context: TaskContext) -> torch.Tensor:
        """Evaluation weights of every task (for read-back): :meth:`~skillfit.skills.PolyRouter.eval_weights`."""
        return self.eval_weights()


# Re-exported: skillfit.skills.routing.<name> stays the path of every router and of the protocol.
from .exclusive import ExclusiveMixer as ExclusiveMixer  # noqa: E402
from .gate_routing import GateRouter as GateRouter, task_sparsity_loss as task_sparsity_loss  # noqa: E402
