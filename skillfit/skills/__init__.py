"""Skill inventories, routers and their injection into models (pure torch).

``docs/methods.md`` gives the math of each method, ``docs/architecture.md`` the layers.
"""

from .config import SkillConfig
from .context import TaskContext
from .gating import gate_experts
from .inject import ALL_LINEAR, inject_skills, skill_layers, target_layer_names, top_block_layers
from .layer import SkillLinear, linear_features
from .new_tasks import add_tasks, train_only_new_tasks
from .readback import centred_cosine, gate_weights, routing_update_gram, routing_weights
from .routing import (
    UNKNOWN_TASK,
    ExclusiveMixer,
    GateRouter,
    PolyRouter,
    Router,
    UniformRouter,
    task_sparsity_loss,
)

__all__ = [
    "ALL_LINEAR",
    "UNKNOWN_TASK",
    "ExclusiveMixer",
    "GateRouter",
    "PolyRouter",
    "Router",
    "UniformRouter",
    "add_tasks",
    "centred_cosine",
    "gate_experts",
    "gate_weights",
    "task_sparsity_loss",
    "target_layer_names",
    "top_block_layers",
    "SkillConfig",
    "SkillLinear",
    "TaskContext",
    "inject_skills",
    "linear_features",
    "routing_update_gram",
    "routing_weights",
    "skill_layers",
    "train_only_new_tasks",
]
