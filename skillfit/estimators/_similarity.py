"""``task_similarity``: how alike the tasks' learned routing is."""

from __future__ import annotations

from numbers import Integral
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

from .._validation import NONE, Interval, validate_arguments
from ..skills import centred_cosine, routing_update_gram
from ._concurrency import reads_model

TOP_K_CONSTRAINTS = {"top_k": [Interval(Integral, 1, None), NONE]}


class TaskSimilarityMixin:
    """``task_similarity``, read from the routers or PEMT's gates."""

    # ---------------------------------------------------------- introspection
    @reads_model
    def task_similarity(self, top_k: int | None = None) -> "pd.DataFrame":
        """How alike the tasks' routing is: a centred cosine similarity, from -1 to 1.

        For Poly-routed skills, two tasks are compared by the updates their routing
        builds from the shared skills in every layer (``routing_update_gram``), not by
        the raw weights: skill ``k`` of one layer has nothing to do with skill ``k`` of
        another, and a routing difference matters only where the skills differ. For
        PEMT's gates, by the gate vectors. Either way, what every task shares (the
        mean over tasks) is taken out first, so the similarity shows how tasks differ:
        0 means the two tasks' deviations from the mean are unrelated (orthogonal; with the
        mean taken out, an average pair scores slightly below 0), 1 is the same deviation.

        Parameters
        ----------
        top_k : int, optional
            Return only each task's ``top_k`` most similar other tasks, as a long
            table: what stays readable with hundreds of tasks.

        Returns
        -------
        DataFrame
            Without ``top_k``: shape (n_tasks, n_tasks), indexed by ``tasks_`` on both
            axes, 1 on the diagonal. With ``top_k``: columns ``task, rank, neighbour,
            similarity``, ``min(top_k, n_tasks - 1)`` rows per task, most similar first.

        Raises
        ------
        ValueError
            If the estimator has no learned routing to compare (LoRA, MTLoRA).

        See Also
        --------
        skillfit.plotting.plot_task_similarity : Heat map of this matrix, clustered.
        skillfit.skills.routing_update_gram : Inner products of the tasks' routed updates.
        skillfit.skills.centred_cosine : Centred cosine similarity from a Gram matrix.

        References
        ----------
        .. [1] Ponti, Sordoni, Bengio, Reddy. "Combining Parameter-efficient Modules for
           Task-level Generalisation." EACL 2023 (arXiv:2202.13914).
        .. [2] Kornblith, Norouzi, Lee, Hinton. "Similarity of Neural Network
           Representations Revisited." ICML 2019 (arXiv:1905.00414).

        Examples
        --------
        >>> import numpy as np
        >>> from skillfit import PolyClassifier
        >>> from skillfit.datasets import make_tiny_backbone
        >>> X = [("a great film", "movies"), ("a dull plot", "movies"),
        ...      ("win a free prize now", "sms"), ("see you at noon", "sms"),
        ...      ("who wrote the book", "questions"), ("where is the city", "questions")]
        >>> y = ["pos", "neg", "spam", "ham", "HUM", "LOC"]
        >>> clf = PolyClassifier(backbone=make_tiny_backbone(), max_epochs=1, random_state=0).fit(X, y)
        >>> similarity = clf.task_similarity()
        >>> similarity.shape
        (3, 3)
        >>> list(similarity.index)
        ['movies', 'questions', 'sms']
        >>> bool(np.allclose(np.diag(similarity), 1) and np.allclose(similarity, similarity.T))
        True
        >>> nearest = clf.task_similarity(top_k=1)
        >>> list(nearest.columns)
        ['task', 'rank', 'neighbour', 'similarity']
        >>> len(nearest)  # one neighbour per task
        3
        """
        import pandas as pd

        self._check_fitted()
        validate_arguments(f"{type(self).__name__}.task_similarity", {"top_k": top_k}, TOP_K_CONSTRAINTS)
        gates = getattr(self, "layer_gate_weights_", None)
        if gates:
            vectors = np.concatenate([weights.reshape(len(self.tasks_), -1) for weights in gates.values()], axis=1)
            gram = vectors.astype(np.float64) @ vectors.T.astype(np.float64)
        else:
            gram = routing_update_gram(self.network_)
        if gram is None:
            raise ValueError(f"{type(self).__name__} has no learned routing to compare tasks with.")
        similarity = centred_cosine(gram)
        if top_k is None:
            return pd.DataFrame(similarity, index=self.tasks_, columns=self.tasks_)
        np.fill_diagonal(similarity, -np.inf)  # a task is not its own neighbour
        k = min(top_k, len(self.tasks_) - 1)
        nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
        rows = len(self.tasks_) * k
        return pd.DataFrame({
            "task": np.repeat(self.tasks_, k),
            "rank": np.tile(np.arange(1, k + 1), len(self.tasks_)),
            "neighbour": np.asarray(self.tasks_)[nearest.ravel()] if rows else [],
            "similarity": np.take_along_axis(similarity, nearest, axis=1).ravel(),
        })
