"""Declarative parameter validation for the estimators.

Each estimator declares its parameters as dataclass fields with their constraints,
``rank: int = parameter(8, Interval(Integral, 1, None))`` (``parameter`` and
``parameter_constraints(estimator)`` live in ``skillfit/estimators/_params.py``);
:func:`validate_parameters` checks them at the start of ``fit`` with one message format.
Modelled on scikit-learn's constraint table, kept here because scikit-learn's helper is
private API.
"""

from __future__ import annotations

import math
import os
from numbers import Integral, Real
from typing import Any, Iterable


class InvalidParameterError(ValueError, TypeError):
    """A constructor parameter has a wrong type or value (both a ValueError and a TypeError)."""


class Interval:
    """Numbers of ``kind`` between ``left`` and ``right`` (None: unbounded).

    Parameters
    ----------
    kind : numbers.Integral or numbers.Real
        ``Integral`` accepts ints only (not bools); ``Real`` accepts ints and floats.
    left, right : float or None
        Bounds.
    closed : {"both", "left", "right", "neither"}, default="both"
        Which bounds belong to the interval.
    """

    def __init__(self, kind: type, left: float | None, right: float | None, closed: str = "both") -> None:
        self.kind, self.left, self.right, self.closed = kind, left, right, closed

    def is_satisfied_by(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, self.kind):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False  # nan, and inf even where a side is unbounded: training could only diverge
        left_ok = self.left is None or (value >= self.left if self.closed in ("both", "left") else value > self.left)
        right_ok = self.right is None or (
            value <= self.right if self.closed in ("both", "right") else value < self.right
        )
        return left_ok and right_ok

    def __str__(self) -> str:
        kind = "an int" if self.kind is Integral else "a float"
        left_bracket = "[" if self.closed in ("both", "left") and self.left is not None else "("
        right_bracket = "]" if self.closed in ("both", "right") and self.right is not None else ")"
        left = "-inf" if self.left is None else self.left
        right = "inf" if self.right is None else self.right
        return f"{kind} in the range {left_bracket}{left}, {right}{right_bracket}"


class Options:
    """One of a fixed set of values."""

    def __init__(self, *values: Any) -> None:
        self.values = values

    def is_satisfied_by(self, value: Any) -> bool:
        return any(value is option or (type(value) is type(option) and value == option) for option in self.values)

    def __str__(self) -> str:
        if self.values == (None,):
            return "None"
        listed = "{" + ", ".join(repr(v) for v in self.values) + "}"
        return ("a str among " if all(isinstance(v, str) for v in self.values) else "one of ") + listed


class InstanceOf:
    """An instance of one of ``types``, with a readable description."""

    def __init__(self, types: type | tuple[type, ...], description: str) -> None:
        self.types, self.description = types, description

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, self.types) and not isinstance(value, bool)

    def __str__(self) -> str:
        return self.description


class StringList:
    """A non-empty list or tuple of non-empty strings."""

    def is_satisfied_by(self, value: Any) -> bool:
        return (
            isinstance(value, (list, tuple))
            and len(value) > 0
            and all(isinstance(item, str) and item for item in value)
        )

    def __str__(self) -> str:
        return "a non-empty list of str"


NONE = Options(None)
STRING = InstanceOf(str, "a str")
PATH = InstanceOf((str, os.PathLike), "a str or path-like folder")
CALLBACK_LIST = InstanceOf((list, tuple), "a list of skillfit.callbacks.Callback objects")
RANDOM_STATE = [Interval(Integral, 0, 2**32 - 1), NONE]


def validate_parameters(estimator: Any, constraints: dict[str, Iterable[Any]]) -> None:
    """Raise :class:`InvalidParameterError` for the first parameter that breaks its constraints.

    The message reads: "The 'rank' parameter of CPolyClassifier must be an int in the
    range [1, inf). Got 0 instead."
    """
    validate_arguments(type(estimator).__name__, estimator.get_params(deep=False), constraints)


def validate_arguments(owner: str, values: dict[str, Any], constraints: dict[str, Iterable[Any]]) -> None:
    """:func:`validate_parameters` for any named values, e.g. the arguments of a method.

    ``owner`` names whose parameters they are: "The 'mode' parameter of
    CPolyClassifier.adapt must be a str among {...}. Got 'x' instead."
    """
    for name, options in constraints.items():
        options = list(options)
        value = values[name]
        if any(option.is_satisfied_by(value) for option in options):
            continue
        described = [str(option) for option in options]
        allowed = described[0] if len(described) == 1 else ", ".join(described[:-1]) + " or " + described[-1]
        raise InvalidParameterError(f"The {name!r} parameter of {owner} must be {allowed}. Got {value!r} instead.")


__all__ = [
    "InstanceOf",
    "Integral",
    "Interval",
    "InvalidParameterError",
    "NONE",
    "Options",
    "RANDOM_STATE",
    "STRING",
    "Real",
    "StringList",
    "validate_arguments",
    "validate_parameters",
]
