"""A skill layer's per-task parameters, and their growth for new tasks (``adapt``): routing rows, exclusive skills."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from .routing import ExclusiveMixer, grown


class TaskGrowthMixin:
    """The per-task parameters of :class:`~skillfit.skills.SkillLinear` and their growth (``add_tasks``)."""

    def per_task_parameters(self) -> list[nn.Parameter]:
        """Parameters whose first dimension is the task: what a new task gets rows of.

        The exclusive skills (C-Poly) and the routers' per-task tables (Polytropon's
        routing logits, the exclusive skills' mixing logits); an optimizer that
        steps only on the batch's tasks treats these rows apart.

        Returns
        -------
        list of nn.Parameter
            Each with one row per task, ``config.n_tasks`` rows.

        See Also
        --------
        skillfit.skills.SkillLinear.add_tasks : Grow these parameters by new tasks.
        skillfit.skills.train_only_new_tasks : Train only the new tasks' rows.

        Examples
        --------
        >>> import torch
        >>> from skillfit.skills import SkillConfig, SkillLinear, TaskContext
        >>> config = SkillConfig(n_tasks=3, n_shared=4, n_exclusive=1, rank=2, combine="output")
        >>> layer = SkillLinear(torch.nn.Linear(8, 8), config, TaskContext())
        >>> [tuple(param.shape) for param in layer.per_task_parameters()]
        [(3, 1, 1, 8, 2), (3, 1, 1, 2, 8), (3, 1, 4)]
        """
        candidates = [self.exclusive_A, self.exclusive_B]
        for owner in (self.router, self.exclusive_mixer):
            if owner is not None:
                candidates += owner.per_task_parameters()
        return [param for param in candidates if param is not None]

    def add_tasks(self, n_new: int, *, average: bool = False) -> None:
        """Grow every per-task tensor by ``n_new`` tasks; old tasks' values are kept exactly.

        New routing rows start as at initialisation and new exclusive skills as fresh
        skills (A random, B zero). With ``average=True`` (Poly-mu) the new tasks do not
        route over the shared skills: their exclusive skills start as the uniform
        average of the shared skills instead (a layer without exclusive skills gets one
        per task, zero for the old tasks, which leaves their updates unchanged).

        New routing rows let a new task learn its routing over the trained skills
        (Poly-z); ``average=True`` starts it from the skills' average (Poly-mu): the
        few-shot adaptation modes of Caccia et al., over Polytropon's skills.
        ``config`` is replaced by one with ``n_tasks + n_new`` tasks.

        Parameters
        ----------
        n_new : int
            Number of tasks to add; they get the indices ``n_tasks .. n_tasks + n_new - 1``.
        average : bool, default=False
            Start the new tasks from the shared skills' average (Poly-mu) instead of
            routing them over the shared skills.

        See Also
        --------
        skillfit.skills.add_tasks : Grow every skill layer of a model.
        skillfit.skills.SkillLinear.per_task_parameters : The parameters that grow.

        Examples
        --------
        >>> import torch
        >>> from skillfit.skills import SkillConfig, SkillLinear, TaskContext
        >>> _ = torch.manual_seed(0)
        >>> layer = SkillLinear(torch.nn.Linear(8, 8), SkillConfig(n_tasks=3, n_shared=4), TaskContext()).eval()
        >>> with torch.no_grad():
        ...     _ = layer.shared_B.normal_()
        >>> before = layer.delta_weight(torch.tensor([0, 1, 2]))
        >>> layer.add_tasks(2)
        >>> layer.config.n_tasks
        5
        >>> torch.allclose(before, layer.delta_weight(torch.tensor([0, 1, 2])))   # old tasks unchanged
        True
        """
        config = self.config
        T, K = config.n_tasks, config.n_shared
        n_exclusive = max(config.n_exclusive, 1) if average and K else config.n_exclusive
        self.config = replace(
            config, n_tasks=T + n_new, n_exclusive=n_exclusive,
            exclusive_rank=config.rank if n_exclusive and not config.n_exclusive else config.exclusive_rank,
        )
        if self.router is not None:
            self.router.add_tasks(n_new)
        new_enabled = self.shared_enabled.new_full((n_new,), 0.0 if average and K else 1.0)
        self.shared_enabled = torch.cat([self.shared_enabled, new_enabled])
        if not n_exclusive:
            return
        new_A, new_B = self._new_exclusive_skills(n_new, n_exclusive, average and K > 0)
        if self.exclusive_A is None:  # Poly-mu on a layer without exclusive skills: old tasks get zeros.
            old_A = torch.zeros(T, *new_A.shape[1:], dtype=new_A.dtype, device=new_A.device)
            self.exclusive_A = nn.Parameter(old_A)
            self.exclusive_B = nn.Parameter(torch.zeros(T, *new_B.shape[1:], dtype=new_B.dtype, device=new_B.device))
            self.exclusive_mixer = ExclusiveMixer(T, config.n_splits, n_exclusive).to(new_A.device)
        self.exclusive_A = grown(self.exclusive_A, new_A)
        self.exclusive_B = grown(self.exclusive_B, new_B)
        self.exclusive_mixer.add_tasks(n_new)

    def _new_exclusive_skills(self, n_new: int, n_exclusive: int, average: bool) -> tuple[torch.Tensor, torch.Tensor]:
        heads, r_ex = self.config.n_splits, self.config.task_rank
        d_in, d_out = self.in_features // heads, self.out_features // heads
        reference = self.shared_A if self.shared_A is not None else self.exclusive_A
        if average:
            # Poly-mu: every exclusive slot holds the skills' mean, so any mixture of them is the mean.
            A = self.shared_A.detach().mean(dim=1, keepdim=True).expand(heads, n_exclusive, d_in, r_ex)
            B = self.shared_B.detach().mean(dim=1, keepdim=True).expand(heads, n_exclusive, r_ex, d_out)
            return A.unsqueeze(0).repeat(n_new, 1, 1, 1, 1), B.unsqueeze(0).repeat(n_new, 1, 1, 1, 1)
        A = torch.empty(n_new, heads, n_exclusive, d_in, r_ex, dtype=reference.dtype, device=reference.device)
        self._init_A(A)
        return A, torch.zeros(n_new, heads, n_exclusive, r_ex, d_out, dtype=reference.dtype, device=reference.device)
