"""Plots of fitted estimators (needs matplotlib, an optional dependency)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["cluster_order", "plot_history", "plot_routing", "plot_task_similarity"]


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


def cluster_order(similarity: np.ndarray) -> np.ndarray:
    """Task order that puts similar tasks next to one another: average-linkage leaves.

    ``similarity`` is a square matrix such as
    :meth:`~skillfit.PolyClassifier.task_similarity` returns; the distance clustered
    is ``1 - similarity`` (clipped at 0 and symmetrised), by SciPy's average-linkage
    hierarchical clustering [1]_, and the order is that of the dendrogram's leaves.
    Needs SciPy only, not matplotlib.

    Parameters
    ----------
    similarity : ndarray of shape (n_tasks, n_tasks)
        Similarities, 1 for identical tasks. With fewer than 3 tasks the order is
        unchanged.

    Returns
    -------
    order : ndarray of shape (n_tasks,)
        A permutation of ``range(n_tasks)``: row ``i`` of the ordered matrix is row
        ``order[i]`` of ``similarity``.

    See Also
    --------
    skillfit.plotting.plot_task_similarity : Draws the similarity in this order.
    skillfit.plotting.plot_routing : Draws routing weights, tasks in this order with ``order="cluster"``.
    skillfit.PolyClassifier.task_similarity : A similarity matrix of fitted tasks.

    References
    ----------
    .. [1] Müllner. "Modern hierarchical, agglomerative clustering algorithms."
       arXiv:1109.2378, 2011.

    Examples
    --------
    Tasks 0 and 2 are alike, and so are tasks 1 and 3:

    >>> import numpy as np
    >>> from skillfit.plotting import cluster_order
    >>> similarity = np.array([[1.0, 0.0, 0.9, 0.1],
    ...                        [0.0, 1.0, 0.1, 0.8],
    ...                        [0.9, 0.1, 1.0, 0.0],
    ...                        [0.1, 0.8, 0.0, 1.0]])
    >>> cluster_order(similarity).tolist()
    [0, 2, 1, 3]
    """
    if len(similarity) < 3:
        return np.arange(len(similarity))
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    distance = np.clip(1.0 - np.asarray(similarity, dtype=np.float64), 0.0, None)
    distance = (distance + distance.T) / 2
    np.fill_diagonal(distance, 0.0)
    return leaves_list(linkage(squareform(distance, checks=False), method="average"))


def _task_order(estimator: Any, order: str, similarity: np.ndarray | None = None) -> np.ndarray:
    """Row order of the tasks of ``estimator`` for ``order`` ("auto", "cluster" or "fitted")."""
    if order not in ("auto", "cluster", "fitted"):
        raise ValueError(f"order must be 'auto', 'cluster' or 'fitted', got {order!r}.")
    n_tasks = len(estimator.tasks_)
    if order == "fitted" or (order == "auto" and n_tasks <= MANY_TASKS):
        return np.arange(n_tasks)
    return cluster_order(estimator.task_similarity().to_numpy() if similarity is None else similarity)


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


def _short_layer_names(names: list[str]) -> list[str]:
    """Layer names without the prefix they all share (``encoder.layer.`` and the like)."""
    if len(names) < 2:
        return names
    parts = [name.split(".") for name in names]
    common = 0
    while all(len(p) > common + 1 and p[common] == parts[0][common] for p in parts):
        common += 1
    return [".".join(p[common:]) for p in parts]


def plot_routing(
    estimator: Any, *, ax: Any = None, layer: str | None = None, cmap: str = "viridis",
    order: str = "auto", max_labels: int = 40,
) -> Any:
    """Draw the routing weights of a fitted estimator as a tasks × skills heatmap.

    Skills are separate in every layer and head, so the columns are every routed
    layer's skills side by side (``routing_weights_``), with a line between layers.

    Parameters
    ----------
    estimator : fitted skillfit estimator
        One with routing (Poly, C-Poly) or gates (PEMT).
    ax : matplotlib Axes, optional
        Where to draw; a new figure by default (at most 12 inches wide and high).
    layer : str, optional
        A key of ``layer_routing_weights_``: draw that layer only (its heads side by
        side). PEMT's gates are drawn averaged over layers (experts are the same tasks
        in every layer) unless a layer is named.
    cmap : str, default="viridis"
        Colour map.
    order : {"auto", "cluster", "fitted"}, default="auto"
        Task order: ``"fitted"`` keeps ``tasks_``; ``"cluster"`` puts tasks with
        similar routing next to one another (average-linkage clustering of
        :meth:`~skillfit.PolyClassifier.task_similarity`, see
        :func:`~skillfit.plotting.cluster_order`); ``"auto"`` clusters above 30 tasks.
    max_labels : int, default=40
        Most task names (and layer names) written; with more, every k-th is.

    Returns
    -------
    ax : matplotlib Axes
        The Axes drawn on, titled ``"<estimator class> routing"``, one row per task.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If ``estimator`` is not fitted.
    ValueError
        If ``layer`` is not a routed layer, or the estimator has no shared skills.
    ImportError
        If matplotlib is not installed.

    See Also
    --------
    skillfit.plotting.plot_task_similarity : How alike the tasks' routing is.
    skillfit.plotting.cluster_order : The task order of ``order="cluster"``.
    skillfit.PolyClassifier : Shared skills routed per task.

    Notes
    -----
    Needs matplotlib (``pip install skillfit[plot]``). The routing matrix of Poly
    [1]_ gives each task a distribution over the shared skills of each layer; with
    ``n_splits > 1`` (Multi-Head Routing [2]_) every head has its own. PEMT [3]_ has
    gates over task experts instead.

    References
    ----------
    .. [1] Ponti, Sordoni, Bengio, Reddy. "Combining Parameter-efficient Modules for
       Task-level Generalisation." EACL 2023 (arXiv:2202.13914).
    .. [2] Caccia, Ponti, Su, Pereira, Le Roux, Sordoni. "Multi-Head Adapter Routing for
       Cross-Task Generalization." NeurIPS 2023 (arXiv:2211.03831).
    .. [3] Lin, Fu, Liu, Li, Sun. "PEMT: Multi-Task Correlation Guided
       Mixture-of-Experts Enables Parameter-Efficient Transfer Learning." Findings of ACL 2024
       (arXiv:2402.15082).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")  # draw without a display
    >>> import matplotlib.pyplot as plt
    >>> from skillfit import PolyClassifier
    >>> from skillfit.datasets import make_tiny_backbone
    >>> X = [("a great film", "movies"), ("a dull plot", "movies"),
    ...      ("win a free prize now", "sms"), ("see you at noon", "sms")]
    >>> y = ["pos", "neg", "spam", "ham"]
    >>> from skillfit.plotting import plot_routing
    >>> clf = PolyClassifier(backbone=make_tiny_backbone(), n_skills=2, max_epochs=1, random_state=0).fit(X, y)
    >>> ax = plot_routing(clf)
    >>> type(ax).__name__, ax.get_title(), ax.get_ylabel()
    ('Axes', 'PolyClassifier routing', 'task')
    >>> [label.get_text() for label in ax.get_yticklabels()]
    ['movies', 'sms']
    >>> plt.close("all")
    """
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(estimator, "network_")
    gates = getattr(estimator, "gate_weights_", None)
    per_layer = getattr(estimator, "layer_gate_weights_", None) or getattr(estimator, "layer_routing_weights_", {})
    n_tasks = len(estimator.tasks_)
    if layer is not None:
        if layer not in per_layer:
            raise ValueError(f"layer={layer!r} is not a routed layer; choose one of {sorted(per_layer)[:5]}...")
        weights, blocks = per_layer[layer].reshape(n_tasks, -1), {}
        block = per_layer[layer].shape[-1]  # one block per head
    elif gates is not None:
        weights, blocks, block = np.asarray(gates), {}, 0
    else:
        weights = np.asarray(estimator.routing_weights_)
        block = weights.shape[1] // max(1, len(per_layer))  # the columns of one layer
        blocks = dict(zip(_short_layer_names(list(per_layer)), range(0, weights.shape[1], block))) if per_layer else {}
    if weights.shape[1] == 0:
        raise ValueError(f"{type(estimator).__name__} has no shared skills to route over.")
    rows = _task_order(estimator, order)
    plt = _pyplot()
    if ax is None:
        width = min(MAX_FIGURE_INCHES, 2.2 + 0.25 * weights.shape[1])
        _, ax = plt.subplots(figsize=(max(width, 4.0), _figure_height(n_tasks)))
    image = ax.imshow(weights[rows], aspect="auto", cmap=cmap, interpolation="nearest")
    _label_ticks(ax, "y", [str(estimator.tasks_[i]) for i in rows], max_labels)
    if block and weights.shape[1] > block:
        for edge in range(block, weights.shape[1], block):
            ax.axvline(edge - 0.5, color="white", linewidth=0.6)
    if blocks:
        step = max(1, -(-len(blocks) // max_labels))
        shown = list(blocks.items())[::step]
        ax.set_xticks([start + (block - 1) / 2 for _, start in shown], [name for name, _ in shown], rotation=90, fontsize=7)
        ax.set_xlabel(f"shared skills of each routed layer ({block} per layer)")
    else:
        ax.set_xticks(range(weights.shape[1]))
        ax.set_xlabel("expert (task)" if gates is not None and layer is None else "head × shared skill")
    ax.set_ylabel("task")
    ax.set_title(f"{type(estimator).__name__} routing" + (f": {layer}" if layer else ""))
    ax.figure.colorbar(image, ax=ax)
    return ax


def plot_task_similarity(
    estimator: Any, *, ax: Any = None, cmap: str = "viridis", order: str = "auto", max_labels: int = 40,
) -> Any:
    """Draw :meth:`~skillfit.PolyClassifier.task_similarity` as a heatmap, similar tasks next to one another.

    The similarity is a centred cosine similarity of the tasks' routing, from -1 to
    1 (centring as in centred kernel alignment [3]_); the colour scale spans that
    range.

    Parameters
    ----------
    estimator : fitted skillfit estimator
        One with routing (Poly, C-Poly) or gates (PEMT).
    ax : matplotlib Axes, optional
        Where to draw; a new square figure by default.
    cmap : str, default="viridis"
        Colour map.
    order : {"auto", "cluster", "fitted"}, default="auto"
        As in :func:`~skillfit.plotting.plot_routing`; ``"auto"`` clusters above 30 tasks.
    max_labels : int, default=40
        Most task names written on each axis.

    Returns
    -------
    ax : matplotlib Axes
        The Axes drawn on, tasks on both axes.

    Raises
    ------
    ValueError
        If the estimator has no learned routing to compare tasks with.
    ImportError
        If matplotlib is not installed.

    See Also
    --------
    skillfit.PolyClassifier.task_similarity : The matrix drawn.
    skillfit.plotting.plot_routing : The routing weights themselves.
    skillfit.plotting.cluster_order : The task order of ``order="cluster"``.

    Notes
    -----
    Needs matplotlib (``pip install skillfit[plot]``).

    References
    ----------
    .. [3] Kornblith, Norouzi, Lee, Hinton. "Similarity of Neural Network Representations
       Revisited." ICML 2019 (arXiv:1905.00414).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")  # draw without a display
    >>> import matplotlib.pyplot as plt
    >>> from skillfit import PolyClassifier
    >>> from skillfit.datasets import make_tiny_backbone
    >>> X = [("a great film", "movies"), ("a dull plot", "movies"),
    ...      ("win a free prize now", "sms"), ("see you at noon", "sms")]
    >>> y = ["pos", "neg", "spam", "ham"]
    >>> from skillfit.plotting import plot_task_similarity
    >>> clf = PolyClassifier(backbone=make_tiny_backbone(), n_skills=2, max_epochs=1, random_state=0).fit(X, y)
    >>> ax = plot_task_similarity(clf)
    >>> ax.get_title()
    'PolyClassifier: task similarity of routing'
    >>> [label.get_text() for label in ax.get_xticklabels()]
    ['movies', 'sms']
    >>> plt.close("all")
    """
    similarity = estimator.task_similarity()
    values = similarity.to_numpy()
    rows = _task_order(estimator, order, values)
    names = [str(similarity.index[i]) for i in rows]
    plt = _pyplot()
    if ax is None:
        side = min(MAX_FIGURE_INCHES, 2.5 + 0.35 * len(names))
        _, ax = plt.subplots(figsize=(side + 1.0, side))
    image = ax.imshow(values[np.ix_(rows, rows)], cmap=cmap, interpolation="nearest", vmin=-1.0, vmax=1.0)
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
        Any skillfit estimator; its ``history_`` is drawn.
    ax : matplotlib Axes, optional
        Where to draw; a new figure by default.

    Returns
    -------
    ax : matplotlib Axes
        The Axes of the loss (a validation score other than the loss is on a twin
        Axes).

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If ``estimator`` is not fitted.
    ValueError
        If the estimator has no training history.
    ImportError
        If matplotlib is not installed.

    See Also
    --------
    skillfit.PolyClassifier.fit : Fits and records ``history_``.
    skillfit.plotting.plot_routing : The routing learned.

    Notes
    -----
    Needs matplotlib (``pip install skillfit[plot]``).

    References
    ----------
    .. [1] Prechelt. "Early Stopping -- But When?" In Neural Networks: Tricks of the Trade,
       Lecture Notes in Computer Science 1524, Springer, 1998.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")  # draw without a display
    >>> import matplotlib.pyplot as plt
    >>> from skillfit import PolyClassifier
    >>> from skillfit.datasets import make_tiny_backbone
    >>> X = [("a great film", "movies"), ("a dull plot", "movies"),
    ...      ("win a free prize now", "sms"), ("see you at noon", "sms")]
    >>> y = ["pos", "neg", "spam", "ham"]
    >>> from skillfit.plotting import plot_history
    >>> clf = PolyClassifier(backbone=make_tiny_backbone(), n_skills=2, max_epochs=2, early_stopping=True,
    ...                      random_state=0).fit(X, y, X_val=X, y_val=y)
    >>> ax = plot_history(clf)
    >>> ax.get_title(), ax.get_xlabel(), ax.get_ylabel()
    ('PolyClassifier training', 'epoch', 'loss')
    >>> [text.get_text() for text in ax.get_legend().get_texts()]
    ['training loss', 'validation loss', 'kept epoch']
    >>> plt.close("all")
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
