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


def plot_history(estimator: Any, *, ax: Any = None) -> Any:
    """Draw the per-epoch training loss and validation score of a fitted estimator.

    With ``validation_scoring="loss"`` the validation loss shares the loss axis;
    other validation scores get a second y axis. The epoch whose weights were kept
    by early stopping is starred; dashed lines separate training stages (PEMT) and
    ``adapt`` calls.

    Parameters
    ----------
    estimator : fitted skillfit estimator
    ax : matplotlib Axes, optional
        Where to draw; a new figure by default.

    Returns
    -------
    matplotlib Axes
    """
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(estimator, "network_")
    history = getattr(estimator, "history_", None)
    if not history:
        raise ValueError(f"{type(estimator).__name__} has no training history to plot; fit it first.")
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 3.6))
    epochs = np.arange(1, len(history) + 1)
    lines = ax.plot(epochs, [record["loss"] for record in history], marker="o", label="training loss")
    validated = [(x, record["validation_score"]) for x, record in zip(epochs, history) if "validation_score" in record]
    if validated:
        x, scores = map(np.asarray, zip(*validated))
        as_loss = getattr(estimator, "validation_scoring", "loss") == "loss"
        target = ax if as_loss else ax.twinx()
        values = -scores if as_loss else scores
        lines += target.plot(x, values, marker="s", color="C1", label="validation loss" if as_loss else "validation score")
        best = getattr(estimator, "best_validation_score_", None)
        if best is not None and getattr(estimator, "early_stopping", False):
            kept = int(np.flatnonzero(scores == best)[-1])
            lines += target.plot(x[kept], values[kept], marker="*", markersize=14, color="C3", linestyle="none", label="kept epoch")
        if not as_loss:
            target.set_ylabel("validation score")
    stages = [record.get("stage", "") for record in history]
    for i in range(1, len(stages)):
        if stages[i] != stages[i - 1]:
            ax.axvline(i + 0.5, color="grey", linestyle="--", linewidth=1)
            ax.annotate(stages[i], (i + 0.6, 1.0), xycoords=("data", "axes fraction"), va="top", fontsize=8, color="grey")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(f"{type(estimator).__name__} training")
    ax.legend(lines, [line.get_label() for line in lines], loc="best")
    return ax
