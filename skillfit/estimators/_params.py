"""Estimator parameters as dataclass fields: default and constraints in one place.

``@estimator_parameters`` turns a class into a keyword-only dataclass that keeps
scikit-learn's behaviour: ``__init__`` only stores, ``repr`` and equality stay
``BaseEstimator``'s, and ``get_params`` reads the generated signature.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def parameter(default: Any, *constraints: Any) -> Any:
    """A constructor parameter with its default and the constraints ``fit`` checks."""
    return dataclasses.field(default=default, metadata={"constraints": list(constraints)})


def estimator_parameters(cls: type) -> type:
    """Make ``cls`` a keyword-only dataclass over its :func:`parameter` fields."""
    return dataclasses.dataclass(kw_only=True, repr=False, eq=False)(cls)


def parameter_constraints(estimator: Any) -> dict[str, list]:
    """``{name: constraints}`` of every parameter of ``estimator``."""
    return {field.name: field.metadata["constraints"] for field in dataclasses.fields(estimator)}
