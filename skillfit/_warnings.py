"""Warnings that point at the user's line: one helper, no hand-counted ``stacklevel``."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import warnings

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep
# Frames that stand between the user and skillfit without being either: a with block's exit,
# and the process launchers that run a data-parallel rank (whose warnings go to the caller's
# process; left to them, "torch" would be their module, which quiet_libraries silences).
_PASS_THROUGH_PREFIXES = (
    _PACKAGE,
    os.path.abspath(contextlib.__file__),
    os.path.dirname(os.path.abspath(multiprocessing.__file__)) + os.sep,
)
_TORCH_LAUNCHER = os.sep + os.path.join("torch", "multiprocessing") + os.sep


def _passes_through(filename: str) -> bool:
    path = os.path.abspath(filename)
    return path.startswith(_PASS_THROUGH_PREFIXES) or _TORCH_LAUNCHER in path


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn(message, category)`` attributed to the first caller outside skillfit.

    The stack is walked from the caller up past skillfit's own frames (and contextlib's),
    so the warning names the user's line however deep inside skillfit it is raised, and
    a ``"default"`` filter shows it once per line of theirs. From inside a library that
    calls skillfit (a scikit-learn search), the warning names that library's line.
    """
    frame, level = sys._getframe(1), 2
    while frame is not None and _passes_through(frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
