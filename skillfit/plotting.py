"""Plots of fitted estimators (needs matplotlib, an optional dependency)."""

from __future__ import annotations

from typing import Any

import numpy as np


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            "skillfit.plotting needs matplotlib, which is not installed. Install it with "
            "`pip install matplotlib` (or `pip install skillfit[plot]`)."
        ) from error
    return plt


def plot_routing(estimator: Any, *, ax: Any = None, layer: str | None = None, cmap: str = "viridis") -> Any:
    """Draw the tasks × skills routing weights of a fitted estimator as a heatmap.

    Parameters
    ----------
    estimator : fitted skillfit estimator
        One with routing (Poly, C-Poly) or gates (PEMT).
    ax : matplotlib Axes, optional
        Where to draw; a new figure by default.
    layer : str, optional
        A key of ``layer_routing_weights_`` to draw that layer (heads averaged); by
        default the average over layers (``routing_weights_``).
    cmap : str, default="viridis"
        Colour map.

    Returns
    -------
    matplotlib Axes
    """
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(estimator, "network_")
    gates = getattr(estimator, "gate_weights_", None)
    if layer is not None:
        per_layer = getattr(estimator, "layer_gate_weights_", None) or estimator.layer_routing_weights_
        if layer not in per_layer:
            raise ValueError(f"layer={layer!r} is not a routed layer; choose one of {sorted(per_layer)[:5]}...")
        weights = per_layer[layer].reshape(len(estimator.tasks_), -1, per_layer[layer].shape[-1]).mean(axis=1)
    else:
        weights = gates if gates is not None else estimator.routing_weights_
    if weights.shape[1] == 0:
        raise ValueError(f"{type(estimator).__name__} has no shared skills to route over.")
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(1.2 + 0.6 * weights.shape[1], 1.0 + 0.4 * weights.shape[0]))
    image = ax.imshow(np.asarray(weights), aspect="auto", cmap=cmap)
    ax.set_yticks(range(len(estimator.tasks_)), [str(task) for task in estimator.tasks_])
    ax.set_xticks(range(weights.shape[1]))
    ax.set_xlabel("expert (task)" if gates is not None else "shared skill")
    ax.set_ylabel("task")
    ax.set_title(f"{type(estimator).__name__} routing" + (f": {layer}" if layer else ""))
    ax.figure.colorbar(image, ax=ax)
    return ax
