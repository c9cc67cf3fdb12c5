"""Skill inventories, routers and their injection into models (pure torch)."""

from .config import SkillConfig
from .context import TaskContext
from .inject import (
    ALL_LINEAR,
    gate_experts,
    gate_weights,
    inject_skills,
    routing_weights,
    skill_layers,
    target_layer_names,
    top_block_layers,
)
from .layer import SkillLinear, linear_features
from .routing import UNKNOWN_TASK, ExclusiveMixer, GateRouter, PolyRouter, task_sparsity_loss

__all__ = [
    "ALL_LINEAR",
    "UNKNOWN_TASK",
    "ExclusiveMixer",
    "GateRouter",
    "PolyRouter",
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
    "routing_weights",
    "skill_layers",
]
