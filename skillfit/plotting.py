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


# Above this many tasks, plots order tasks by clustering and thin their labels.
MANY_TASKS = 30
MAX_FIGURE_INCHES = 12.0


def cluster_order(vectors: np.ndarray) -> np.ndarray:
    """Row order that puts similar rows (by cosine) next to one another: average-linkage leaves."""
    if len(vectors) < 3:
        return np.arange(len(vectors))
    from scipy.cluster.hierarchy import leaves_list, linkage

    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms == 0, 1.0, norms)  # Euclidean on unit vectors orders as cosine does
    return leaves_list(linkage(unit, method="average", metric="euclidean"))


def _task_order(vectors: np.ndarray, order: str) -> np.ndarray:
    if order not in ("auto", "cluster", "fitted"):
        raise ValueError(f"order must be 'auto', 'cluster' or 'fitted', got {order!r}.")
    if order == "cluster" or (order == "auto" and len(vectors) > MANY_TASKS):
        return cluster_order(vectors)
    return np.arange(len(vectors))


def _label_ticks(ax: Any, axis: str, labels: list[str], max_labels: int) -> None:
    """Ticks for ``labels`` on ``axis`` ("x" or "y"), at most ``max_labels`` of them, evenly spaced."""
    step = max(1, -(-len(labels) // max_labels))
    positions = list(range(0, len(labels), step))
    shown = [labels[i] for i in positions]
    if axis == "y":
        ax.set_yticks(positions, shown, fontsize=8 if step > 1 else None)
    else:
        ax.set_xticks(positions, shown, rotation=90, fontsize=8 if step > 1 else None)


def _figure_height(n_rows: int) -> float:
    return min(MAX_FIGURE_INCHES, 1.0 + 0.4 * n_rows)


def plot_routing(
    estimator: Any, *, ax: Any = None, layer: str | None = None, cmap: str = "viridis",
    order: str = "auto", max_labels: int = 40,
) -> Any:
    """Draw the tasks × skills routing weights of a fitted estimator as a heatmap.

    Parameters
    ----------
    estimator : fitted skillfit estimator
        One with routing (Poly, C-Poly) or gates (PEMT).
    ax : matplotlib Axes, optional
        Where to draw; a new figure by default (at most 12 inches high).
    layer : str, optional
        A key of ``layer_routing_weights_`` to draw that layer (heads averaged); by
        default the average over layers (``routing_weights_``).
    cmap : str, default="viridis"
        Colour map.
    order : {"auto", "cluster", "fitted"}, default="auto"
        Task order: ``"fitted"`` keeps ``tasks_``; ``"cluster"`` puts tasks with
        similar routing next to one another (average-linkage clustering of the
        per-layer routing, as :meth:`task_similarity` compares it); ``"auto"``
        clusters above 30 tasks.
    max_labels : int, default=40
        Most task names written; with more tasks, every k-th is.

    Returns
    -------
    matplotlib Axes
    """
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(estimator, "network_")
    gates = getattr(estimator, "gate_weights_", None)
    per_layer = getattr(estimator, "layer_gate_weights_", None) or getattr(estimator, "layer_routing_weights_", {})
    if layer is not None:
        if layer not in per_layer:
            raise ValueError(f"layer={layer!r} is not a routed layer; choose one of {sorted(per_layer)[:5]}...")
        weights = per_layer[layer].reshape(len(estimator.tasks_), -1, per_layer[layer].shape[-1]).mean(axis=1)
    else:
        weights = gates if gates is not None else estimator.routing_weights_
    weights = np.asarray(weights)
    if weights.shape[1] == 0:
        raise ValueError(f"{type(estimator).__name__} has no shared skills to route over.")
    routing = np.concatenate([w.reshape(len(estimator.tasks_), -1) for w in per_layer.values()], axis=1) if per_layer else weights
    rows = _task_order(routing, order)
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(1.2 + 0.6 * weights.shape[1], _figure_height(weights.shape[0])))
    image = ax.imshow(weights[rows], aspect="auto", cmap=cmap, interpolation="nearest")
    _label_ticks(ax, "y", [str(estimator.tasks_[i]) for i in rows], max_labels)
    ax.set_xticks(range(weights.shape[1]))
    ax.set_xlabel("expert (task)" if gates is not None else "shared skill")
    ax.set_ylabel("task")
    ax.set_title(f"{type(estimator).__name__} routing" + (f": {layer}" if layer else ""))
    ax.figure.colorbar(image, ax=ax)
    return ax


def plot_task_similarity(
    estimator: Any, *, ax: Any = None, cmap: str = "viridis", order: str = "auto", max_labels: int = 40,
) -> Any:
    """Draw :meth:`task_similarity` as a heatmap, similar tasks next to one another.

    Parameters
    ----------
    estimator : fitted skillfit estimator
        One with routing (Poly, C-Poly) or gates (PEMT).
    ax : matplotlib Axes, optional
        Where to draw; a new square figure by default.
    cmap : str, default="viridis"
        Colour map.
    order : {"auto", "cluster", "fitted"}, default="auto"
        As in :func:`plot_routing`; ``"auto"`` clusters above 30 tasks.
    max_labels : int, default=40
        Most task names written on each axis.

    Returns
    -------
    matplotlib Axes
    """
    similarity = estimator.task_similarity()
    values = similarity.to_numpy()
    rows = _task_order(values, order)
    names = [str(similarity.index[i]) for i in rows]
    plt = _pyplot()
    if ax is None:
        side = min(MAX_FIGURE_INCHES, 2.5 + 0.35 * len(names))
        _, ax = plt.subplots(figsize=(side + 1.0, side))
    image = ax.imshow(values[np.ix_(rows, rows)], cmap=cmap, interpolation="nearest")
    _label_ticks(ax, "y", names, max_labels)
    _label_ticks(ax, "x", names, max_labels)
    ax.set_title(f"{type(estimator).__name__}: task similarity of routing")
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
