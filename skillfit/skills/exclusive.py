"""C-Poly's exclusive skills: each task's own skills and the per-task softmax that mixes them."""

from __future__ import annotations

import torch
from torch import nn

from .context import TaskContext
from .router_base import grown


class ExclusiveMixer(nn.Module):
    """Weights of a task over its own ``n_exclusive`` skills (C-Poly), called as ``mixer(tasks, context)``.

    A softmax of learned per-task logits, initialised uniform. With one exclusive
    skill per task there is nothing to learn and the weight is exactly 1. Unknown
    tasks get weight 0: they have no exclusive skills. The task-specific skills are
    C-Poly's [1]_; the per-task softmax over them is skillfit's simplification
    (``docs/methods.md``, "Where skillfit departs from the references").

    Parameters
    ----------
    n_tasks : int
        Number of tasks ``T``, each owning its exclusive skills.
    n_splits : int
        Number of heads ``H``.
    n_exclusive : int
        Exclusive skills ``E`` per task and head; with 1 there are no logits.

    Attributes
    ----------
    exclusive_logits : nn.Parameter of shape (n_tasks, n_splits, n_exclusive) or None
        Each task's logits over its exclusive skills, initialised at zero; None when
        ``n_exclusive == 1``.

    See Also
    --------
    skillfit.skills.PolyRouter : Routes the shared skills.
    skillfit.skills.SkillLinear : The layer that holds the exclusive skills.
    skillfit.CPolyClassifier : The estimator that uses exclusive skills.

    References
    ----------
    .. [1] Wang, Sun, Jin, Wang, Fan, Xu, Du, Fan. "Customizable Combination of
       Parameter-Efficient Modules for Multi-Task Learning." ICLR 2024 (arXiv:2312.03248).

    Examples
    --------
    >>> import torch
    >>> from skillfit.skills import ExclusiveMixer, TaskContext
    >>> mixer = ExclusiveMixer(n_tasks=3, n_splits=1, n_exclusive=2)
    >>> context = TaskContext()
    >>> weights = mixer(torch.tensor([0, 2]), context)
    >>> weights.shape
    torch.Size([2, 1, 2])
    >>> torch.allclose(weights, torch.full((2, 1, 2), 0.5))  # uniform at start
    True
    >>> with context.tasks([-1]):
    ...     mixer(torch.tensor([-1]), context)  # an unknown task has no exclusive skills
    tensor([[[0., 0.]]], grad_fn=<WhereBackward0>)
    """

    def __init__(self, n_tasks: int, n_splits: int, n_exclusive: int) -> None:
        super().__init__()
        self.n_splits = n_splits
        if n_exclusive > 1:
            self.exclusive_logits = nn.Parameter(torch.zeros(n_tasks, n_splits, n_exclusive))
        else:
            self.register_parameter("exclusive_logits", None)

    def forward(self, tasks: torch.Tensor, context: TaskContext) -> torch.Tensor:
        """Each task's weights over its own exclusive skills, per head.

        Parameters
        ----------
        tasks : LongTensor of shape (U,)
            The distinct tasks of the batch, -1 for a task unseen in training.
        context : TaskContext
            The model's task context: whether the batch holds task -1.

        Returns
        -------
        Tensor of shape (U, n_splits, n_exclusive)
            The softmax of the task's logits (exactly 1 with one exclusive skill);
            zero for task -1.

        See Also
        --------
        skillfit.skills.ExclusiveMixer.mix : Mixes the exclusive skills with these weights.
        skillfit.skills.TaskContext.per_task : Fills the rows of the unknown task.

        Examples
        --------
        >>> import torch
        >>> from skillfit.skills import ExclusiveMixer, TaskContext
        >>> mixer = ExclusiveMixer(n_tasks=3, n_splits=2, n_exclusive=1)
        >>> mixer(torch.tensor([0, 1]), TaskContext())
        tensor([[[1.],
                 [1.]],
                [[1.],
                 [1.]]])
        """
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
        read as it is, with no mixing arithmetic. These are C-Poly's task-specific
        skills, added to the shared ones by the layer.

        Parameters
        ----------
        tasks : LongTensor of shape (U,)
            The distinct tasks of the batch, -1 for a task unseen in training.
        context : TaskContext
            The model's task context: whether the batch holds task -1.
        A : Tensor of shape (T, H, E, d_in/H, r)
            Every task's exclusive down-projections.
        B : Tensor of shape (T, H, E, r, d_out/H)
            Every task's exclusive up-projections.

        Returns
        -------
        A_t : Tensor of shape (U, H, d_in/H, r)
            Each task's mixed down-projection, per head; zero for task -1.
        B_t : Tensor of shape (U, H, r, d_out/H)
            Each task's mixed up-projection, per head; zero for task -1.

        See Also
        --------
        skillfit.skills.Router.mix : Mixes the shared skills.
        skillfit.skills.SkillLinear.delta_weight : The update the factors build.

        Examples
        --------
        >>> import torch
        >>> from skillfit.skills import ExclusiveMixer, TaskContext
        >>> mixer = ExclusiveMixer(n_tasks=3, n_splits=1, n_exclusive=1)
        >>> context = TaskContext()
        >>> A, B = torch.randn(3, 1, 1, 4, 2), torch.randn(3, 1, 1, 2, 5)
        >>> with context.tasks([-1, 2]):
        ...     A_t, B_t = mixer.mix(torch.tensor([-1, 2]), context, A, B)
        >>> A_t.shape, B_t.shape
        (torch.Size([2, 1, 4, 2]), torch.Size([2, 1, 2, 5]))
        >>> bool((A_t[0] == 0).all()), torch.equal(A_t[1], A[2, :, 0])
        (True, True)
        """
        if self.exclusive_logits is None:
            return context.per_task(tasks, lambda known: (A[known][:, :, 0], B[known][:, :, 0]), 0.0)
        weights = self(tasks, context).to(A.dtype)
        A, B = context.per_task(tasks, lambda known: (A[known], B[known]), 0.0)
        return torch.einsum("uhe,uhedr->uhdr", weights, A), torch.einsum("uhe,uhero->uhro", weights, B)

    def per_task_parameters(self) -> list[nn.Parameter]:
        """Parameters whose first dimension is the task.

        Returns
        -------
        list of nn.Parameter
            ``[exclusive_logits]``, or empty with one exclusive skill per task.

        See Also
        --------
        skillfit.skills.SkillLinear.per_task_parameters : Every per-task parameter of a layer.
        skillfit.skills.train_only_new_tasks : Trains only the new tasks' rows of these.

        Examples
        --------
        >>> from skillfit.skills import ExclusiveMixer
        >>> [p.shape for p in ExclusiveMixer(n_tasks=3, n_splits=1, n_exclusive=2).per_task_parameters()]
        [torch.Size([3, 1, 2])]
        >>> ExclusiveMixer(n_tasks=3, n_splits=1, n_exclusive=1).per_task_parameters()
        []
        """
        return [] if self.exclusive_logits is None else [self.exclusive_logits]

    def add_tasks(self, n_new: int) -> None:
        """New tasks start from the uniform mixture of their exclusive skills.

        The old tasks' logits are kept exactly; with one exclusive skill per task there
        is nothing to grow.

        Parameters
        ----------
        n_new : int
            Number of tasks to add after the existing ones.

        See Also
        --------
        skillfit.skills.SkillLinear.add_tasks : Grows one layer, exclusive skills included.
        skillfit.skills.add_tasks : Grows every skill layer of a model.

        Examples
        --------
        >>> import torch
        >>> from skillfit.skills import ExclusiveMixer, TaskContext
        >>> mixer = ExclusiveMixer(n_tasks=2, n_splits=1, n_exclusive=3)
        >>> mixer.add_tasks(1)
        >>> mixer.exclusive_logits.shape
        torch.Size([3, 1, 3])
        >>> torch.allclose(mixer(torch.tensor([2]), TaskContext()), torch.full((1, 1, 3), 1 / 3))
        True
        """
        if self.exclusive_logits is not None:
            self.exclusive_logits = grown(self.exclusive_logits, torch.zeros_like(self.exclusive_logits[:n_new]))
