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


def check_target_pattern(target_modules: object) -> None:
    """ValueError when ``target_modules`` is a string that is neither ``"all-linear"`` nor a valid regular expression."""
    if isinstance(target_modules, str) and target_modules != ALL_LINEAR:
        try:
            re.compile(target_modules)
        except re.error as error:
            raise ValueError(
                f"target_modules={target_modules!r} is not a valid regular expression ({error}). A string is matched "
                "against whole layer names; pass a valid pattern such as r'.*\\.(query|value)', or a list of names."
            ) from None


def _is_target(name: str, module: nn.Module, target_modules: str | Sequence[str], output_layer: nn.Module | None) -> bool:
    if not isinstance(module, (nn.Linear, Conv1D)):
        return False
    if target_modules == ALL_LINEAR:
        return module is not output_layer
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, name) is not None
    return any(name == target or name.endswith("." + target) for target in target_modules)


def target_layer_names(model: nn.Module, target_modules: str | Sequence[str]) -> list[str]:
    r"""Qualified names of the linear layers of ``model`` that ``target_modules`` selects.

    LoRA adapts chosen weight matrices of a transformer, such as the attention's query
    and value projections [1]_; the names are those of ``model.named_modules()`` in a
    Hugging Face Transformers model [2]_. Layers that are already skill layers are
    skipped.

    Parameters
    ----------
    model : nn.Module
        Any model, usually a Hugging Face transformer.
    target_modules : str or sequence of str
        A sequence matches layers whose qualified name equals an entry or ends with
        ``"." + entry``; a string is a regular expression matched against the whole
        name; ``"all-linear"`` (``skillfit.skills.ALL_LINEAR``) takes every
        ``nn.Linear`` and ``Conv1D`` but the output embedding.

    Returns
    -------
    list of str
        The selected layers' qualified names, in the order of ``model.named_modules()``.

    Raises
    ------
    ValueError
        If nothing matches, or an entry of a sequence matches no layer (the message
        lists the names of the model's linear layers), or a string is not a valid
        regular expression.

    See Also
    --------
    skillfit.skills.inject_skills : Replace the selected layers by skill layers.
    skillfit.skills.top_block_layers : The selected layers of the top blocks.

    References
    ----------
    .. [1] Hu, Shen, Wallis, Allen-Zhu, Li, Wang, Wang, Chen. "LoRA: Low-Rank Adaptation of
       Large Language Models." ICLR 2022 (arXiv:2106.09685).
    .. [2] Wolf et al. "Transformers: State-of-the-Art Natural Language Processing."
       EMNLP 2020 System Demonstrations (arXiv:1910.03771).

    Examples
    --------
    >>> from transformers import AutoModel
    >>> from skillfit.datasets import make_tiny_backbone
    >>> from skillfit.skills import target_layer_names
    >>> model = AutoModel.from_pretrained(make_tiny_backbone())   # a tiny BERT
    >>> for name in target_layer_names(model, ["query", "value"]):
    ...     print(name)
    encoder.layer.0.attention.self.query
    encoder.layer.0.attention.self.value
    encoder.layer.1.attention.self.query
    encoder.layer.1.attention.self.value
    >>> target_layer_names(model, r".*layer\.1\.attention\.self\.(query|key)")   # a regular expression
    ['encoder.layer.1.attention.self.query', 'encoder.layer.1.attention.self.key']
    >>> len(target_layer_names(model, "all-linear"))
    13
    >>> target_layer_names(model, ["q_proj"])
    Traceback (most recent call last):
    ...
    ValueError: target_modules=['q_proj'] matches no linear layer of BertModel. Its linear layers are named
    ['dense', 'key', 'query', 'value']; pass some of these names.
    """
    check_target_pattern(target_modules)
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
    Names outside any numbered stack are never in a top block. MTLoRA puts its
    task-specific modules in the top blocks, where features become task-specific [1]_.

    Parameters
    ----------
    names : sequence of str
        Qualified layer names, such as those of
        :func:`~skillfit.skills.target_layer_names`.
    n_blocks : int
        Number of top blocks per stack; 0 selects nothing.

    Returns
    -------
    set of str
        The names in the last ``n_blocks`` blocks of their stack.

    See Also
    --------
    skillfit.skills.target_layer_names : The names to choose from.
    skillfit.MTLoRAClassifier : Task-specific LoRAs in the top ``n_task_layers`` blocks.

    References
    ----------
    .. [1] Agiza, Neseem, Reda. "MTLoRA: Low-Rank Adaptation Approach for Efficient
       Multi-Task Learning." CVPR 2024 (arXiv:2403.20320).

    Examples
    --------
    >>> from skillfit.skills import top_block_layers
    >>> names = ["encoder.block.0.q", "encoder.block.1.q", "encoder.block.2.q",
    ...          "decoder.block.0.q", "decoder.block.1.q", "lm_head"]
    >>> sorted(top_block_layers(names, 2))
    ['decoder.block.0.q', 'decoder.block.1.q', 'encoder.block.1.q', 'encoder.block.2.q']
    >>> sorted(top_block_layers(names, 1))
    ['decoder.block.1.q', 'encoder.block.2.q']
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

    Raises
    ------
    ValueError
        If ``target_modules`` selects no layer (see
        :func:`~skillfit.skills.target_layer_names`), or a configuration's
        ``n_splits`` does not divide a layer's widths.

    See Also
    --------
    skillfit.skills.SkillConfig : The skill inventory of a layer.
    skillfit.skills.skill_layers : Find the skill layers of a model again.
    skillfit.skills.TaskContext.tasks : Set the batch's task ids.
    skillfit.skills.top_block_layers : The layers of the top blocks (MTLoRA).

    Notes
    -----
    As LoRA (Hu et al. 2022), the pretrained weights are frozen and each target layer gets a
    trainable low-rank update; here the update is routed per task over a skill
    inventory (Polytropon [2]_). A per-layer configuration places MTLoRA's
    task-specific modules in the top blocks only (Agiza et al. 2024). The model is usually a
    Hugging Face Transformers model (Wolf et al. 2020); each skill layer goes on its base layer's
    device.

    References
    ----------
    .. [2] Ponti, Sordoni, Bengio, Reddy. "Combining Parameter-efficient Modules for
       Task-level Generalisation." EACL 2023 (arXiv:2202.13914).

    Examples
    --------
    >>> import torch
    >>> from transformers import AutoModel
    >>> from skillfit.datasets import make_tiny_backbone
    >>> from skillfit.skills import SkillConfig, inject_skills
    >>> model = AutoModel.from_pretrained(make_tiny_backbone())   # a tiny BERT, width 32
    >>> context = inject_skills(model, SkillConfig(n_tasks=3, n_shared=4, rank=2), ["query", "value"])
    >>> type(model.encoder.layer[0].attention.self.query).__name__
    'SkillLinear'
    >>> sum(param.numel() for param in model.parameters() if param.requires_grad)   # the skills and routers
    2096
    >>> input_ids = torch.tensor([[2, 10, 11, 3], [2, 12, 13, 3]])
    >>> with context.tasks([0, 2]):   # one task per row
    ...     model(input_ids=input_ids).last_hidden_state.shape
    torch.Size([2, 4, 32])

    A configuration per layer: MTLoRA's task-specific skills in the top block only.

    >>> from skillfit.skills import skill_layers, target_layer_names, top_block_layers
    >>> model = AutoModel.from_pretrained(make_tiny_backbone())
    >>> top = top_block_layers(target_layer_names(model, ["query", "value"]), 1)
    >>> def config(name):
    ...     return SkillConfig(n_tasks=3, n_exclusive=int(name in top), routing="none", combine="output")
    >>> context = inject_skills(model, config, ["query", "value"])
    >>> [(name.split(".")[2], layer.config.n_exclusive) for name, layer in skill_layers(model)]
    [('0', 0), ('0', 0), ('1', 1), ('1', 1)]
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
    """Every ``(qualified name, SkillLinear)`` of ``model``.

    The layers that :func:`~skillfit.skills.inject_skills` put there: LoRA-style
    adapted layers (Hu et al. 2022) with Polytropon's skill inventories (Ponti et al. 2023).

    Parameters
    ----------
    model : nn.Module
        A model with skill layers.

    Yields
    ------
    name : str
        The layer's qualified name in ``model``.
    layer : SkillLinear
        The skill layer.

    See Also
    --------
    skillfit.skills.inject_skills : Put skill layers into a model.
    skillfit.skills.routing_weights : Read each layer's routing back.


    Examples
    --------
    >>> from torch import nn
    >>> from skillfit.skills import SkillConfig, inject_skills, skill_layers
    >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    >>> context = inject_skills(model, SkillConfig(n_tasks=2, n_shared=3, rank=2), "all-linear")
    >>> [(name, layer.in_features, layer.out_features) for name, layer in skill_layers(model)]
    [('0', 8, 8), ('2', 8, 4)]
    """
    for name, module in model.named_modules():
        if isinstance(module, SkillLinear):
            yield name, module
