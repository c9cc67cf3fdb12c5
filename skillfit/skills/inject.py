"""Putting skill layers into a model, and reading them back."""

from __future__ import annotations

import re
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from .config import SkillConfig
from .context import TaskContext
from .layer import SkillLinear
from .routing import GateRouter, PolyRouter

ALL_LINEAR = "all-linear"


def _is_target(name: str, module: nn.Module, target_modules: str | Sequence[str], output_layer: nn.Module | None) -> bool:
    if not isinstance(module, (nn.Linear, Conv1D)):
        return False
    if target_modules == ALL_LINEAR:
        return module is not output_layer
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, name) is not None
    return any(name == target or name.endswith("." + target) for target in target_modules)


def target_layer_names(model: nn.Module, target_modules: str | Sequence[str]) -> list[str]:
    """Qualified names of the linear layers of ``model`` that ``target_modules`` selects."""
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
    return targets


_BLOCK_INDEX = re.compile(r"^(.*?)\.(\d+)\.")


def top_block_layers(names: Sequence[str], n_blocks: int) -> set[str]:
    """The names among ``names`` that sit in the last ``n_blocks`` blocks of their stack.

    A block is the first numbered component of a name (``encoder.layer.5.attention...``
    is block 5 of stack ``encoder.layer``); encoder and decoder stacks count apart.
    Names outside any numbered stack are never in a top block.
    """
    located = {name: _BLOCK_INDEX.match(name) for name in names}
    last_block: dict[str, int] = {}
    for match in filter(None, located.values()):
        stack, index = match.group(1), int(match.group(2))
        last_block[stack] = max(last_block.get(stack, -1), index)
    return {
        name
        for name, match in located.items()
        if match is not None and int(match.group(2)) > last_block[match.group(1)] - n_blocks
    }


def inject_skills(
    model: nn.Module,
    config: SkillConfig | Callable[[str], SkillConfig],
    target_modules: str | Sequence[str],
    context: TaskContext | None = None,
) -> TaskContext:
    """Freeze ``model`` and replace its target linear layers by :class:`SkillLinear`.

    Parameters
    ----------
    model : nn.Module
        Any model, usually a Hugging Face transformer; changed in place.
    config : SkillConfig or callable
        The skill inventory of every adapted layer, or a function from a layer's
        qualified name to its inventory (MTLoRA gives its top blocks more).
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
    config_of = config if callable(config) else (lambda name: config)
    for name in target_layer_names(model, target_modules):
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        base_layer = getattr(parent, child_name)
        skill_layer = SkillLinear(base_layer, config_of(name), context, name=name)
        skill_layer.to(device=base_layer.weight.device)
        setattr(parent, child_name, skill_layer)
    return context


def skill_layers(model: nn.Module) -> Iterator[tuple[str, SkillLinear]]:
    """Every ``(qualified name, SkillLinear)`` of ``model``."""
    for name, module in model.named_modules():
        if isinstance(module, SkillLinear):
            yield name, module


def routing_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """Evaluation-mode routing weights of each Poly-routed layer, ``(n_tasks, n_splits, n_shared)``.

    Tasks that do not use the shared skills (adapted with Poly-mu) get zero rows.
    """
    with torch.no_grad():
        return {
            name: (layer.router.eval_weights() * layer.shared_enabled.view(-1, 1, 1)).float().cpu().numpy()
            for name, layer in skill_layers(model)
            if isinstance(layer.router, PolyRouter)
        }


def gate_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """Gate of every task over the experts in each gated layer (PEMT), ``(n_tasks, n_experts)``."""
    weights = {}
    with torch.no_grad():
        for name, layer in skill_layers(model):
            if isinstance(layer.router, GateRouter):
                descriptions = layer.context.task_descriptions
                tasks = torch.arange(len(descriptions), device=descriptions.device)
                gate = layer.router(tasks, descriptions)[:, 0] * layer.shared_enabled.view(-1, 1)
                weights[name] = gate.float().cpu().numpy()
    return weights


def gate_experts(model: nn.Module, description_dim: int, temperature: float = 1.0) -> None:
    """Turn every layer of one private LoRA per task into PEMT's gated mixture of experts.

    Each layer's task-private skills become frozen experts shared by all tasks, mixed
    by a zero-initialised gate over task descriptions, and each task gets a fresh
    adapter of its own (A random, B zero), added in output space.
    """
    for name, layer in list(skill_layers(model)):
        config = layer.config
        if config.n_shared or config.n_exclusive != 1 or config.n_splits != 1:
            raise ValueError(f"Layer {name!r} does not hold one private skill per task; it has {config}.")
        gated = SkillLinear(
            layer.base_layer,
            SkillConfig(
                n_tasks=config.n_tasks, n_shared=config.n_tasks, n_exclusive=1, rank=config.task_rank,
                alpha=config.alpha,
                routing="gate", combine="output", dropout=config.dropout, temperature=temperature,
                description_dim=description_dim,
            ),
            layer.context,
            name=name,
        ).to(layer.exclusive_A.device)
        with torch.no_grad():
            gated.shared_A[0].copy_(layer.exclusive_A[:, 0, 0])
            gated.shared_B[0].copy_(layer.exclusive_B[:, 0, 0])
        gated.shared_A.requires_grad_(False)
        gated.shared_B.requires_grad_(False)
        parent_name, _, child_name = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child_name, gated)
