"""Estimator classes by name, for loading saved folders without importing the package that lists them.

Every concrete subclass of ``SkillEstimatorBase`` registers itself when it is defined
(``__init_subclass__``), including users' own subclasses; abstract bases, whose names
end in ``Base`` or start with ``_``, do not. A name keeps the first class registered
under it, so a user's class named like a built-in one cannot redirect the loading of
folders saved by the built-in.
"""

from __future__ import annotations

ESTIMATORS: dict[str, type] = {}


def register(cls: type) -> None:
    """Record ``cls`` under its name, unless it is an abstract base."""
    name = cls.__name__
    if not name.startswith("_") and not name.endswith("Base"):
        ESTIMATORS.setdefault(name, cls)


def estimator_class(name: str) -> type | None:
    """The estimator class saved under ``name``, or None when no such class is defined."""
    return ESTIMATORS.get(name)
