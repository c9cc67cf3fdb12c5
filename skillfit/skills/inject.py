"""Putting skill layers into a model, and finding them there.

Reading routing back is in :mod:`~skillfit.skills.readback`, PEMT's conversion of
private skills into gated experts in :mod:`~skillfit.skills.gating`.
"""

from __future__ import annotations

import re
from typing import Callable, Iterator, Sequence

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
    unmatched = []
    if not isinstance(target_modules, str):
        unmatched = [t for t in target_modules if not any(name == t or name.endswith("." + t) for name in targets)]
    if not targets or unmatched:
        linear_names = sorted(
            {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, (nn.Linear, Conv1D))}
        )
        what = f"target_modules={target_modules!r} matches no linear layer" if not targets else (
            f"target_modules entries {unmatched} match no linear layer"
        )
        raise ValueError(
            f"{what} of {type(model).__name__}. Its linear layers are named {linear_names}; pass some of these names."
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
        base_layer = model.get_submodule(name)
        skill_layer = SkillLinear(base_layer, config_of(name), context, name=name)
        skill_layer.to(device=base_layer.weight.device)
        replace_layer(model, name, skill_layer)
    return context


def replace_layer(model: nn.Module, name: str, layer: nn.Module) -> None:
    """Put ``layer`` at the qualified ``name`` of ``model``, in place of what is there."""
    parent_name, _, child_name = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child_name, layer)


def skill_layers(model: nn.Module) -> Iterator[tuple[str, SkillLinear]]:
    """Every ``(qualified name, SkillLinear)`` of ``model``."""
    for name, module in model.named_modules():
        if isinstance(module, SkillLinear):
            yield name, module
