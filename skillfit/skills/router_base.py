"""The router protocol: the base class every router derives from, and what routers share.

:class:`Router` is called as ``router(tasks, context)`` and returns ``(U, H, K)`` weights for
the ``U`` distinct tasks of a batch; it mixes the skills with them (:meth:`Router.mix`) and
says what it keeps per task. The routers themselves are in ``routing.py`` (plain LoRA, Poly),
``gate_routing.py`` (PEMT) and ``exclusive.py`` (C-Poly's own skills).
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
    suit a router that mixes the skills' factors and keeps nothing per task. The
    factors are mixed as in Polytropon [1]_, one mixture per head as in multi-head
    routing [2]_.

    Parameters
    ----------
    *args, **kwargs
        Passed to ``torch.nn.Module``; the base router takes none.

    See Also
    --------
    skillfit.skills.PolyRouter : Learned task-skill routing (Polytropon, Poly-S / MHR).
    skillfit.skills.UniformRouter : Weight 1 on the single shared skill (plain LoRA).
    skillfit.skills.GateRouter : PEMT's gate over experts, from task descriptions.
    skillfit.skills.SkillLinear : The layer that calls its router.

    References
    ----------
    .. [1] Ponti, Sordoni, Bengio, Reddy. "Combining Parameter-efficient Modules for
       Task-level Generalisation." EACL 2023 (arXiv:2202.13914).
    .. [2] Caccia, Ponti, Su, Pereira, Le Roux, Sordoni. "Multi-Head Adapter Routing for
       Cross-Task Generalization." NeurIPS 2023 (arXiv:2211.03831).

    Examples
    --------
    A router that always picks the first of three skills, in one head:

    >>> import torch
    >>> from skillfit.skills import Router, TaskContext
    >>> class FirstSkill(Router):
    ...     def forward(self, tasks, context):
    ...         weights = torch.zeros(len(tasks), 1, 3)
    ...         weights[..., 0] = 1.0
    ...         return weights
    >>> router = FirstSkill()
    >>> weights = router(torch.tensor([0, 2]), TaskContext())
    >>> weights.shape
    torch.Size([2, 1, 3])
    >>> A, B = torch.randn(1, 3, 4, 2), torch.randn(1, 3, 2, 5)
    >>> A_t, B_t = router.mix(weights, A, B)
    >>> A_t.shape, B_t.shape
    (torch.Size([2, 1, 4, 2]), torch.Size([2, 1, 2, 5]))
    >>> torch.equal(A_t[0, 0], A[0, 0]), torch.equal(B_t[1, 0], B[0, 0])
    (True, True)
    >>> router.per_task_parameters(), router.task_weights(TaskContext())
    ([], None)
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
            Row ``u`` holds task ``tasks[u]``'s weights over the ``K`` skills of each
            of the ``H`` heads.

        Raises
        ------
        NotImplementedError
            Always, on the base class: subclasses implement it.

        See Also
        --------
        skillfit.skills.Router.mix : How the weights mix the skills.
        skillfit.skills.TaskContext.per_task : Fills the rows of the unknown task.

        Examples
        --------
        A router is called as ``router(tasks, context)``; a Poly router in evaluation mode:

        >>> import torch
        >>> from skillfit.skills import PolyRouter, TaskContext
        >>> router = PolyRouter(n_tasks=3, n_splits=2, n_skills=4).eval()
        >>> router(torch.tensor([0, 2]), TaskContext()).shape
        torch.Size([2, 2, 4])
        """
        raise NotImplementedError

    def mix(self, weights: torch.Tensor, A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each task's factors from the skills ``A (H, K, d_in/H, r)``, ``B (H, K, r, d_out/H)``.

        Mixes the factors: ``A_t[h] = sum_k w[t,h,k] A[h,k]``, same for ``B_t``: a
        task's parameters are the weighted average of its skills' (Ponti et al. 2022,
        Eq. 3, with ``w`` already normalised), one average per head ``h`` (Caccia
        et al. 2023, multi-head routing). Returns ``(U, H, d_in/H, r)`` and
        ``(U, H, r, d_out/H)``.

        Parameters
        ----------
        weights : Tensor of shape (U, H, K)
            Each task's weights over the skills of each head, as ``forward`` returns them.
        A : Tensor of shape (H, K, d_in/H, r)
            The skills' down-projections.
        B : Tensor of shape (H, K, r, d_out/H)
            The skills' up-projections.

        Returns
        -------
        A_t : Tensor of shape (U, H, d_in/H, r)
            Each task's mixed down-projection, per head.
        B_t : Tensor of shape (U, H, r, d_out/H)
            Each task's mixed up-projection, per head.

        See Also
        --------
        skillfit.skills.GateRouter.mix : Mixes the skills' products instead (PEMT).
        skillfit.skills.SkillLinear.delta_weight : The update ``s * A_t B_t`` these factors build.

        Examples
        --------
        Uniform weights give each task the mean of the skills:

        >>> import torch
        >>> from skillfit.skills import Router
        >>> A, B = torch.randn(2, 3, 4, 2), torch.randn(2, 3, 2, 5)
        >>> weights = torch.full((1, 2, 3), 1 / 3)
        >>> A_t, B_t = Router().mix(weights, A, B)
        >>> A_t.shape, B_t.shape
        (torch.Size([1, 2, 4, 2]), torch.Size([1, 2, 2, 5]))
        >>> torch.allclose(A_t[0], A.mean(dim=1)), torch.allclose(B_t[0], B.mean(dim=1))
        (True, True)
        """
        # Ponti et al. 2022, Eq. 3: sum_j phi_j z_ij / sum_j z_ij, per head.
        return torch.einsum("uhk,hkdr->uhdr", weights, A), torch.einsum("uhk,hkro->uhro", weights, B)

    def per_task_parameters(self) -> list[nn.Parameter]:
        """Parameters whose first dimension is the task.

        They get one row per new task in :meth:`~skillfit.skills.Router.add_tasks`, and
        :func:`~skillfit.skills.train_only_new_tasks` trains only the new rows.

        Returns
        -------
        list of nn.Parameter
            Empty for the base router, which keeps nothing per task.

        See Also
        --------
        skillfit.skills.PolyRouter.per_task_parameters : The routing logits.
        skillfit.skills.SkillLinear.per_task_parameters : Every per-task parameter of a layer.

        Examples
        --------
        >>> from skillfit.skills import UniformRouter
        >>> UniformRouter(n_splits=2).per_task_parameters()
        []
        """
        return []

    def add_tasks(self, n_new: int) -> None:
        """Grow what the router keeps per task by ``n_new`` tasks.

        The base router keeps nothing per task, so this does nothing.

        Parameters
        ----------
        n_new : int
            Number of tasks to add after the existing ones.

        See Also
        --------
        skillfit.skills.PolyRouter.add_tasks : New routing rows, as at initialisation.
        skillfit.skills.add_tasks : Grows every skill layer of a model.

        Examples
        --------
        >>> from skillfit.skills import UniformRouter
        >>> router = UniformRouter(n_splits=1)
        >>> router.add_tasks(2)
        >>> router.per_task_parameters()
        []
        """

    def task_weights(self, context: TaskContext) -> torch.Tensor | None:
        """Evaluation weights of every task (for read-back), or None when they are not learned.

        Parameters
        ----------
        context : TaskContext
            The model's task context (gates read its task descriptions).

        Returns
        -------
        Tensor of shape (n_tasks, H, K) or None
            None for the base router: its weights are not learned.

        See Also
        --------
        skillfit.skills.PolyRouter.task_weights : Poly's evaluation weights.
        skillfit.skills.routing_weights : Reads them back from every layer of a model.

        Examples
        --------
        >>> from skillfit.skills import TaskContext, UniformRouter
        >>> UniformRouter(n_splits=1).task_weights(TaskContext()) is None
        True
        """
        return None


def grown(param: nn.Parameter, new_rows: torch.Tensor) -> nn.Parameter:
    """A new parameter: ``param``'s rows followed by ``new_rows``, same trainability."""
    rows = torch.cat([param.detach(), new_rows.to(dtype=param.dtype, device=param.device)])
    return nn.Parameter(rows, requires_grad=param.requires_grad)
