"""Adding tasks to a trained model and training only what the new tasks own."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from .inject import skill_layers


def add_tasks(model: nn.Module, n_new: int, *, average: bool = False) -> None:
    """Grow every skill layer of ``model`` by ``n_new`` tasks (see :meth:`~skillfit.skills.SkillLinear.add_tasks`).

    New routing rows start as at initialisation, so the new tasks learn their routing
    over the trained skills (Poly-z); with ``average=True`` they start from the
    skills' average instead (Poly-mu). Both are the few-shot adaptation modes of
    Caccia et al. 2023 [1]_, over Polytropon's skills [2]_. The old tasks' values are
    kept exactly.

    Parameters
    ----------
    model : nn.Module
        A model with skill layers; changed in place.
    n_new : int
        Number of tasks to add after the existing ones.
    average : bool, default=False
        Poly-mu: the new tasks start from the average of the shared skills as their
        own adapter instead of routing over them.

    See Also
    --------
    skillfit.skills.train_only_new_tasks : Then trains only what the new tasks own.
    skillfit.PolyClassifier.adapt : Adapts a fitted estimator to new tasks.

    References
    ----------
    .. [1] Caccia, Ponti, Su, Pereira, Le Roux, Sordoni. "Multi-Head Adapter Routing for
       Cross-Task Generalization." NeurIPS 2023 (arXiv:2211.03831).
    .. [2] Ponti, Sordoni, Bengio, Reddy. "Combining Parameter-efficient Modules for
       Task-level Generalisation." EACL 2023 (arXiv:2202.13914).

    Examples
    --------
    >>> from torch import nn
    >>> from skillfit.skills import SkillConfig, add_tasks, inject_skills
    >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    >>> context = inject_skills(model, SkillConfig(n_tasks=2, n_shared=3, rank=2), "all-linear")
    >>> add_tasks(model, 1)  # Poly-z: a new row of routing logits
    >>> model[0].config.n_tasks, model[0].router.routing_logits.shape
    (3, torch.Size([3, 1, 3]))
    >>> add_tasks(model, 1, average=True)  # Poly-mu: an adapter of its own, off the shared skills
    >>> model[0].shared_enabled
    tensor([1., 1., 1., 0.])
    >>> model[0].exclusive_A.shape
    torch.Size([4, 1, 1, 8, 2])
    """
    for _, layer in list(skill_layers(model)):
        layer.add_tasks(n_new, average=average)


def train_only_new_tasks(
    model: nn.Module,
    n_old_tasks: int,
    *,
    extra_per_task: Sequence[nn.Parameter] = (),
    extra_new: Sequence[nn.Parameter] = (),
) -> Callable[[], None]:
    """Freeze ``model`` but for what the tasks after the first ``n_old_tasks`` own.

    Every per-task parameter of the skill layers (and ``extra_per_task``) stays
    trainable with the old tasks' rows masked out of its gradient: with no weight
    decay, AdamW [2]_ then leaves those rows bit-identical. ``extra_new`` (parameters
    created for the new tasks, such as new label rows) is trained whole. This is the
    few-shot adaptation of Caccia et al. 2023 (Caccia et al. 2023): the new tasks learn while the
    trained skills and the old tasks stay as they were.

    Parameters
    ----------
    model : nn.Module
        The model to freeze; its parameters' ``requires_grad`` is changed in place.
    n_old_tasks : int
        Number of leading task rows that must not change.
    extra_per_task : sequence of nn.Parameter, default=()
        Other parameters whose first dimension is the task (PEMT's descriptions).
    extra_new : sequence of nn.Parameter, default=()
        Parameters that belong to the new tasks only.

    Returns
    -------
    callable
        Removes the gradient hooks and restores every parameter's previous
        ``requires_grad``.

    See Also
    --------
    skillfit.skills.add_tasks : Adds the new tasks first.
    skillfit.skills.SkillLinear.per_task_parameters : What a layer keeps per task.
    skillfit.PolyClassifier.adapt : Adapts a fitted estimator to new tasks.

    References
    ----------
    .. [2] Loshchilov, Hutter. "Decoupled Weight Decay Regularization." ICLR 2019
       (arXiv:1711.05101).

    Examples
    --------
    A C-Poly model fitted on two tasks gets a third:

    >>> import torch
    >>> from torch import nn
    >>> from skillfit.skills import SkillConfig, add_tasks, inject_skills, train_only_new_tasks
    >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    >>> config = SkillConfig(n_tasks=2, n_shared=2, n_exclusive=1, rank=2)
    >>> context = inject_skills(model, config, "all-linear")
    >>> add_tasks(model, 1)
    >>> restore = train_only_new_tasks(model, n_old_tasks=2)
    >>> sorted(name for name, param in model[0].named_parameters() if param.requires_grad)
    ['exclusive_A', 'exclusive_B', 'router.routing_logits']
    >>> with context.tasks([0, 2]):
    ...     model(torch.randn(2, 8)).sum().backward()
    >>> grad = model[0].exclusive_B.grad
    >>> bool((grad[:2] == 0).all()), bool((grad[2] != 0).any())
    (True, True)
    >>> restore()
    >>> model[0].shared_A.requires_grad
    True
    """
    requires_grad = {param: param.requires_grad for param in (*model.parameters(), *extra_per_task, *extra_new)}
    model.requires_grad_(False)
    per_task = [param for _, layer in skill_layers(model) for param in layer.per_task_parameters()]
    hooks = []
    for param in (*per_task, *extra_per_task):
        param.requires_grad_(True)
        hooks.append(param.register_hook(lambda grad, n=n_old_tasks: _without_old_rows(grad, n)))
    for param in extra_new:
        param.requires_grad_(True)

    def restore() -> None:
        for handle in hooks:
            handle.remove()
        for param, flag in requires_grad.items():
            param.requires_grad_(flag)

    return restore


def _without_old_rows(grad: torch.Tensor, n_old_tasks: int) -> torch.Tensor:
    return torch.cat([torch.zeros_like(grad[:n_old_tasks]), grad[n_old_tasks:]])
