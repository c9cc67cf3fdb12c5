"""The optimizer of every training loop: AdamW whose per-task tables move one task row at a time.

Per-task parameters (routing logits, exclusive skills: first dimension the task) take a
*lazy* AdamW step, as embedding tables do in TensorFlow's ``LazyAdam`` and PyTorch's
``SparseAdam``: only the rows of the tasks in the batch are read and written, each row
with its own step count for Adam's bias correction. So a train step's optimizer cost
does not grow with the number of tasks, and a task's parameters change only when its
data is seen (dense AdamW would keep moving every absent task's row along its stale
momentum, and decay it). Every other parameter takes torch's AdamW step unchanged.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from ...skills import skill_layers


class TaskRowAdamW(torch.optim.AdamW):
    """AdamW, lazy over the rows of the tasks in the batch for groups marked ``task_rows``.

    Set the batch's tasks with :meth:`set_active_tasks` before :meth:`step`; without
    them, a ``task_rows`` group is updated on every row (still lazily bias-corrected).
    ``amsgrad``, ``maximize`` and ``capturable`` are not supported in those groups.
    """

    active_tasks: torch.Tensor | None = None

    def set_active_tasks(self, tasks: torch.Tensor) -> None:
        """The distinct tasks of the coming step, from the batch's CPU task ids (no device sync)."""
        device = self.param_groups[0]["params"][0].device if self.param_groups[0]["params"] else "cpu"
        self.active_tasks = torch.unique(torch.as_tensor(tasks).cpu()).to(device, non_blocking=True)

    def __setstate__(self, state: dict) -> None:
        # Row-stepped tables count steps per row ("row_steps"), with no "step" for Adam's
        # loading check to read (load_state_dict, when a fit resumes): lend them one meanwhile.
        row_states = [values for values in state.get("state", {}).values() if "row_steps" in values and "step" not in values]
        for values in row_states:
            values["step"] = torch.tensor(0.0)
        super().__setstate__(state)
        for values in row_states:
            del values["step"]

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        held = []
        for group in self.param_groups:
            if not group.get("task_rows"):
                continue
            params = [param for param in group["params"] if param.grad is not None]
            if params:
                self._row_steps(params, group)
            for param in params:
                held.append((param, param.grad))
                param.grad = None  # hidden from the dense step below
        try:
            super().step()
        finally:
            for param, grad in held:
                param.grad = grad
        return loss

    def _row_steps(self, params: list[nn.Parameter], group: dict) -> None:
        """AdamW (decoupled weight decay) on the active rows of each of ``params`` only.

        The arithmetic runs on all parameters at once (``torch._foreach_*``): its kernel
        launches do not grow with the number of per-task tables; only the row gathers
        and scatters are per table.
        """
        lr, weight_decay, eps = group["lr"], group["weight_decay"], group["eps"]
        beta1, beta2 = group["betas"]
        rows, steps, grads, exp_avgs, exp_avg_sqs, values = [], [], [], [], [], []
        for param in params:
            state = self.state[param]
            if not state:
                state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["row_steps"] = torch.zeros(param.shape[0], dtype=torch.float32, device=param.device)
            active = self.active_tasks if self.active_tasks is not None else torch.arange(param.shape[0], device=param.device)
            rows.append(active)
            steps.append(state["row_steps"].index_select(0, active))
            grads.append(param.grad.index_select(0, active))
            exp_avgs.append(state["exp_avg"].index_select(0, active))
            exp_avg_sqs.append(state["exp_avg_sq"].index_select(0, active))
            values.append(param.index_select(0, active))
        torch._foreach_add_(steps, 1.0)
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
        # Per-row bias corrections 1 - beta^t, shaped to broadcast over each table's row.
        shapes = [(-1,) + (1,) * (value.ndim - 1) for value in values]
        correction1 = [c.view(shape) for c, shape in zip(_one_minus_powers(beta1, steps), shapes)]
        correction2 = [c.view(shape) for c, shape in zip(_one_minus_powers(beta2, steps), shapes)]
        torch._foreach_mul_(values, 1 - lr * weight_decay)
        denominators = torch._foreach_div(exp_avg_sqs, correction2)
        torch._foreach_sqrt_(denominators)
        torch._foreach_add_(denominators, eps)
        torch._foreach_addcdiv_(values, torch._foreach_div(exp_avgs, correction1), denominators, value=-lr)
        for param, active, value, exp_avg, exp_avg_sq, step in zip(params, rows, values, exp_avgs, exp_avg_sqs, steps):
            state = self.state[param]
            param.index_copy_(0, active, value)
            state["exp_avg"].index_copy_(0, active, exp_avg)
            state["exp_avg_sq"].index_copy_(0, active, exp_avg_sq)
            state["row_steps"].index_copy_(0, active, step)


def _one_minus_powers(beta: float, steps: list[torch.Tensor]) -> list[torch.Tensor]:
    """``1 - beta ** t`` for each tensor of step counts ``t``."""
    powers = torch._foreach_pow(beta, steps)
    torch._foreach_neg_(powers)
    torch._foreach_add_(powers, 1.0)
    return powers


def task_row_parameters(network: nn.Module) -> set[int]:
    """``id`` of every parameter whose first dimension is the task (the skill layers' tables)."""
    return {id(param) for _, layer in skill_layers(network) for param in layer.per_task_parameters()}


def make_optimizer(
    network: nn.Module,
    settings,
    n_steps: int,
    *,
    is_router: Callable[[str], bool],
    weight_decay: float | None = None,
) -> tuple[TaskRowAdamW, torch.optim.lr_scheduler.LambdaLR]:
    """The optimizer over the parameters that require grad, and its schedule.

    Routers take ``settings.router_learning_rate`` and no weight decay; per-task tables
    take lazy row steps (:class:`TaskRowAdamW`); the learning rate follows
    :func:`learning_rate_schedule` (``settings.lr_schedule``) over the ``n_steps`` steps.
    """
    weight_decay = settings.weight_decay if weight_decay is None else weight_decay
    per_task = task_row_parameters(network)
    grouped: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in network.named_parameters():
        if param.requires_grad:
            grouped.setdefault((is_router(name), id(param) in per_task), []).append(param)
    groups = []
    for (router, task_rows), params in sorted(grouped.items()):
        groups.append({
            "params": params,
            "lr": settings.router_learning_rate if router else settings.learning_rate,
            "weight_decay": 0.0 if router else weight_decay,
            "task_rows": task_rows,
        })
    device = next(network.parameters()).device
    optimizer = TaskRowAdamW(groups, fused=device.type == "cuda")
    schedule = learning_rate_schedule(getattr(settings, "lr_schedule", "linear"), n_steps, settings.warmup_fraction)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


LR_SCHEDULES = ("linear", "cosine", "constant")


def learning_rate_schedule(name: str, n_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    """The factor of the learning rate at each step: a linear warm-up, then ``name``'s shape.

    The warm-up takes ``int(warmup_fraction * n_steps)`` steps, rising linearly; then
    ``"linear"`` decays linearly to 0 at ``n_steps``, ``"cosine"`` along half a cosine
    to 0, and ``"constant"`` stays at 1.
    """
    warmup = int(warmup_fraction * n_steps)
    decay_steps = max(1, n_steps - warmup)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if name == "constant":
            return 1.0
        if name == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / decay_steps)))
        return max(0.0, (n_steps - step) / decay_steps)

    return factor
