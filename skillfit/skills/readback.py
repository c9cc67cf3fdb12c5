"""Reading the learned routing of a model's skill layers back, as arrays per layer."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from .inject import skill_layers


def routing_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """Evaluation-mode routing weights of each Poly-routed layer, ``(n_tasks, n_splits, n_shared)``.

    Tasks that do not use the shared skills (adapted with Poly-mu) get zero rows.
    """
    return _task_weights(model, "poly", lambda weights: weights)


def gate_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """Gate of every task over the experts in each gated layer (PEMT), ``(n_tasks, n_experts)``."""
    return _task_weights(model, "gate", lambda weights: weights[:, 0])  # gates have one head


def _task_weights(
    model: nn.Module, routing: str, reshape: Callable[[torch.Tensor], torch.Tensor]
) -> dict[str, np.ndarray]:
    """Every task's router weights in the layers routed by ``routing``, zero for tasks off the shared skills."""
    weights = {}
    with torch.no_grad():
        for name, layer in skill_layers(model):
            if layer.config.routing == routing and layer.router is not None:  # no router without shared skills
                per_task = reshape(layer.router.task_weights(layer.context))
                enabled = layer.shared_enabled.view(-1, *([1] * (per_task.ndim - 1)))
                weights[name] = (per_task * enabled).float().cpu().numpy()
    return weights
