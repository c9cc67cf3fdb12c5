"""Skill inventories, routers and their injection into models (pure torch)."""

from .config import SkillConfig
from .context import TaskContext
from .inject import ALL_LINEAR, inject_skills, routing_weights, skill_layers
from .layer import SkillLinear, linear_features
from .routing import ExclusiveMixer, PolyRouter

__all__ = [
    "ALL_LINEAR",
    "ExclusiveMixer",
    "PolyRouter",
    "SkillConfig",
    "SkillLinear",
    "TaskContext",
    "inject_skills",
    "linear_features",
    "routing_weights",
    "skill_layers",
]
