"""Putting skill layers into a model, and reading them back."""

from __future__ import annotations

import re
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from .config import SkillConfig
from .context import TaskContext
from .layer import SkillLinear

ALL_LINEAR = "all-linear"


def _is_target(name: str, module: nn.Module, target_modules: str | Sequence[str], output_layer: nn.Module | None) -> bool:
    if not isinstance(module, (nn.Linear, Conv1D)):
        return False
    if target_modules == ALL_LINEAR:
        return module is not output_layer
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, name) is not None
    return any(name == target or name.endswith("." + target) for target in target_modules)


def inject_skills(
    model: nn.Module, config: SkillConfig, target_modules: str | Sequence[str], context: TaskContext | None = None
) -> TaskContext:
    """Freeze ``model`` and replace its target linear layers by :class:`SkillLinear`.

    Parameters
    ----------
    model : nn.Module
        Any model, usually a Hugging Face transformer; changed in place.
    config : SkillConfig
        The skill inventory of every adapted layer.
    target_modules : str or sequence of str
        A sequence matches layers whose qualified name equals an entry or ends with
        ``"." + entry`` (``["query", "value"]``); a string is a regular expression
        matched against the whole name; ``"all-linear"`` takes every linear layer but
        the output embedding.
    context : TaskContext, optional
        The task-id holder shared by the new layers; a new one by default.

    Returns
    -------
    TaskContext
        Set task ids through it before a forward pass.
    """
    context = TaskContext() if context is None else context
    model.requires_grad_(False)
    get_output = getattr(model, "get_output_embeddings", None)
    output_layer = get_output() if callable(get_output) else None
    targets = [
        name
        for name, module in model.named_modules()
        if not isinstance(module, SkillLinear)
        and ".base_layer" not in name
        and _is_target(name, module, target_modules, output_layer)
    ]
    if not targets:
        linear_names = sorted(
            {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, (nn.Linear, Conv1D))}
        )
        raise ValueError(
            f"target_modules={target_modules!r} matches no linear layer of {type(model).__name__}. "
            f"Its linear layers are named {linear_names}; pass some of these names."
        )
    for name in targets:
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        base_layer = getattr(parent, child_name)
        skill_layer = SkillLinear(base_layer, config, context, name=name)
        skill_layer.to(device=base_layer.weight.device)
        setattr(parent, child_name, skill_layer)
    return context


def skill_layers(model: nn.Module) -> Iterator[tuple[str, SkillLinear]]:
    """Every ``(qualified name, SkillLinear)`` of ``model``."""
    for name, module in model.named_modules():
        if isinstance(module, SkillLinear):
            yield name, module


def routing_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """Evaluation-mode routing weights of each routed layer, ``(n_tasks, n_splits, n_shared)``."""
    with torch.no_grad():
        return {
            name: layer.router.eval_weights().float().cpu().numpy()
            for name, layer in skill_layers(model)
            if layer.router is not None
        }
