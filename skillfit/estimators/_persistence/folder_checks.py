"""Does a saved folder agree with itself? Checks made by ``from_pretrained`` at load.

A folder is data that may have been edited, truncated or assembled from two models.
What it says about the fitted model (``tasks_``, ``classes_``, the kind of backbone) must
agree with the network it rebuilds (the routers' task tables, the head, the label mask),
or the model would fail or mislead at ``predict``. Each check raises a ValueError that
names the file and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...skills import skill_layers
from .._networks import POOLINGS


def _damaged(path: Path, field: str, problem: str) -> ValueError:
    return ValueError(f"{str(path)!r} is damaged: {field} {problem}. Save the model again, or copy the folder anew.")


def check_fitted_section(fitted: Any, estimator_class: type, path: Path) -> None:
    """The 'fitted' section: a dict whose task ids and labels are non-empty 1-d arrays of distinct values."""
    if not isinstance(fitted, dict):
        raise _damaged(path, "'fitted'", f"is a {type(fitted).__name__}, not a mapping of fitted attributes")
    required = ["tasks_"] + (["classes_"] if hasattr(estimator_class, "predict_proba") else ["decoder_only_"])
    missing = [key for key in required if key not in fitted]
    if missing:
        raise _damaged(path, "'fitted'", f"lacks {missing}, which every fitted model has")
    for key in ("tasks_", "classes_"):
        values = fitted.get(key)
        if key not in fitted:
            continue
        if not isinstance(values, np.ndarray) or values.ndim != 1 or len(values) == 0:
            raise _damaged(path, f"'fitted.{key}'", f"is not a non-empty 1-d array (got {type(values).__name__})")
        if len(set(values.tolist())) != len(values):
            raise _damaged(path, f"'fitted.{key}'", "repeats a value")
        kinds = {type(value).__name__ for value in values.tolist()}
        if key == "tasks_" and not (kinds == {"str"} or kinds == {"int"}):
            raise _damaged(path, "'fitted.tasks_'", f"mixes types {sorted(kinds)}; task ids are all strings or all integers")
    if "pooling_" in fitted and fitted["pooling_"] not in POOLINGS:
        raise _damaged(path, "'fitted.pooling_'", f"is {fitted['pooling_']!r}, not one of {list(POOLINGS)}")
    if "decoder_only_" in fitted and not isinstance(fitted["decoder_only_"], bool):
        raise _damaged(path, "'fitted.decoder_only_'", f"is {fitted['decoder_only_']!r}, not true or false")


def check_network_matches(estimator: Any, path: Path) -> None:
    """The rebuilt network agrees with the fitted attributes: task tables, head, label mask, backbone kind."""
    n_tasks = len(estimator.tasks_)
    network = estimator.network_
    for name, layer in skill_layers(network.backbone):
        if layer.config.n_tasks != n_tasks:
            raise _damaged(path, f"'network.layers.{name}.n_tasks' ({layer.config.n_tasks})",
                           f"disagrees with the {n_tasks} task ids of 'fitted.tasks_'")
        if layer.config.alpha != estimator.alpha:
            raise _damaged(path, f"'network.layers.{name}.alpha' ({layer.config.alpha})",
                           f"disagrees with 'params.alpha' ({estimator.alpha})")
    if hasattr(estimator, "pooling_") and getattr(network, "pooling", estimator.pooling_) != estimator.pooling_:
        raise _damaged(path, f"'fitted.pooling_' ({estimator.pooling_!r})",
                       f"disagrees with 'network.structure.pooling' ({network.pooling!r})")
    label_mask = getattr(network, "label_mask", None)
    if label_mask is not None:
        expected = (n_tasks, len(estimator.classes_))
        if tuple(label_mask.shape) != expected:
            raise _damaged(path, f"'network.structure.label_mask_shape' {list(label_mask.shape)}",
                           f"disagrees with {n_tasks} tasks and {len(estimator.classes_)} classes in 'fitted'")
        if not bool(label_mask.any(dim=1).all()):
            raise _damaged(path, "the label mask", "gives a task no label")
    decoder_only = getattr(network, "decoder_only", None)
    if decoder_only is not None and getattr(estimator, "decoder_only_", decoder_only) != decoder_only:
        raise _damaged(path, f"'fitted.decoder_only_' ({estimator.decoder_only_})",
                       f"disagrees with the backbone, which is {'decoder-only' if decoder_only else 'encoder-decoder'}")
    known = getattr(estimator, "known_answers_", None) or {}
    if not isinstance(known, dict) or not set(known) <= set(estimator.tasks_.tolist()):
        raise _damaged(path, "'fitted.known_answers_'", "names tasks that 'fitted.tasks_' does not have")
