"""Adding tasks to a trained model and training only what the new tasks own."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from .inject import skill_layers


def add_tasks(model: nn.Module, n_new: int, *, average: bool = False) -> None:
    """Grow every skill layer of ``model`` by ``n_new`` tasks (see :meth:`SkillLinear.add_tasks`).

    Parameters
    ----------
    model : nn.Module
        A model with skill layers; changed in place.
    n_new : int
        Number of tasks to add after the existing ones.
    average : bool, default=False
        Poly-mu: the new tasks start from the average of the shared skills as their
        own adapter instead of routing over them.
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
    decay, AdamW then leaves those rows bit-identical. ``extra_new`` (parameters
    created for the new tasks, such as new label rows) is trained whole.

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
