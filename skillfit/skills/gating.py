"""PEMT's stage 2: private skills of stage 1 become frozen experts behind a gate."""

from __future__ import annotations

import torch
from torch import nn

from .config import SkillConfig
from .inject import replace_layer, skill_layers
from .layer import SkillLinear


def gate_experts(model: nn.Module, description_dim: int, temperature: float = 1.0) -> None:
    """Turn every layer of one private LoRA per task into PEMT's gated mixture of experts.

    Each layer's task-private skills become frozen experts shared by all tasks, mixed
    by a zero-initialised gate over task descriptions, and each task gets a fresh
    adapter of its own (A random, B zero), added in output space (Lin et al. 2024 [1]_;
    ``docs/methods.md``, "PEMT").

    Parameters
    ----------
    model : nn.Module
        A model whose skill layers each hold one private skill per task; changed in place.
    description_dim : int
        Width of the task-description vectors the gates read.
    temperature : float, default=1.0
        Temperature of the gate softmax.

    Raises
    ------
    ValueError
        If a skill layer does not hold exactly one private skill per task (shared
        skills, several exclusive skills, or several heads).

    See Also
    --------
    skillfit.skills.GateRouter : The gate each layer gets.
    skillfit.skills.gate_weights : Reads the gates back.
    skillfit.PEMTClassifier : The estimator whose stage 2 this is.

    References
    ----------
    .. [1] Lin, Fu, Liu, Li, Sun. "PEMT: Multi-Task Correlation Guided
       Mixture-of-Experts Enables Parameter-Efficient Transfer Learning." Findings of ACL 2024
       (arXiv:2402.15082).

    Examples
    --------
    Stage 1: one private LoRA per task in each linear layer of a small model.

    >>> import torch
    >>> from torch import nn
    >>> from skillfit.skills import SkillConfig, gate_experts, inject_skills
    >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    >>> config = SkillConfig(n_tasks=3, n_shared=0, n_exclusive=1, routing="none", rank=2)
    >>> context = inject_skills(model, config, "all-linear")

    Stage 2: the three private skills become frozen experts behind a gate.

    >>> gate_experts(model, description_dim=5)
    >>> layer = model[0]
    >>> type(layer.router).__name__, layer.config.n_shared, layer.config.routing
    ('GateRouter', 3, 'gate')
    >>> layer.shared_A.shape, layer.shared_A.requires_grad
    (torch.Size([1, 3, 8, 2]), False)
    >>> context.task_descriptions = torch.randn(3, 5)
    >>> with context.tasks([0, 1, 2]):
    ...     out = model(torch.randn(3, 8))
    >>> out.shape
    torch.Size([3, 4])
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
        replace_layer(model, name, gated)
