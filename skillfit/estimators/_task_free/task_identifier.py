"""Which fitted task a text belongs to: a linear discriminant on frozen sentence features.

The features are the bare backbone's mean-pooled hidden states averaged over its
layers (skills off), so they exist without a task id. The identifier is Fisher's linear discriminant with a
shared, shrunk covariance and equal priors (Hastie et al., *The Elements of Statistical
Learning*, Sec. 4.3; shrinkage of Ledoit and Wolf 2004). It is kept as sufficient
statistics (each task's mean and count, the pooled within-task covariance), so
``adapt`` adds new tasks from their few examples without the fit's data.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.covariance import ledoit_wolf_shrinkage
from torch import nn


class TaskIdentifier(nn.Module):
    """Sufficient statistics of the task identifier, as buffers (saved and pickled with the network).

    Parameters
    ----------
    n_tasks, dim : int
        Shape of the statistics; filled by :meth:`update`.

    Attributes
    ----------
    means : buffer of shape (n_tasks, dim)
        Each task's mean feature vector.
    counts : buffer of shape (n_tasks,)
        Rows each mean is made of.
    covariance : buffer of shape (dim, dim)
        Pooled within-task covariance (maximum likelihood: scatter / total rows).
    shrinkage : buffer of shape ()
        Ledoit-Wolf weight ``a`` of the scaled identity: ``(1 - a) C + a tr(C)/d I``.
    """

    def __init__(self, n_tasks: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("means", torch.zeros(n_tasks, dim, dtype=torch.float32))
        self.register_buffer("counts", torch.zeros(n_tasks, dtype=torch.float32))
        self.register_buffer("covariance", torch.zeros(dim, dim, dtype=torch.float32))
        self.register_buffer("shrinkage", torch.zeros((), dtype=torch.float32))
        self._discriminant: tuple[np.ndarray, np.ndarray] | None = None

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._discriminant = None

    @property
    def n_tasks(self) -> int:
        return self.means.shape[0]

    @classmethod
    def fitted(cls, features: np.ndarray, task_index: np.ndarray, n_tasks: int) -> "TaskIdentifier":
        """An identifier of ``n_tasks`` tasks fitted on ``features`` (rows) of tasks ``task_index``."""
        identifier = cls(n_tasks, features.shape[1])
        within = features.astype(np.float64) - _task_means(features, task_index, n_tasks)[0][task_index]
        shrinkage = ledoit_wolf_shrinkage(within, assume_centered=True) if len(features) > 1 else 1.0
        identifier.shrinkage = torch.tensor(float(shrinkage), device=identifier.means.device)
        identifier.update(features, task_index)
        return identifier

    def update(self, features: np.ndarray, task_index: np.ndarray) -> None:
        """Fold rows into the statistics; task indices past ``n_tasks`` add tasks.

        Means and the pooled covariance are merged exactly (Chan et al.'s pairwise
        update), so fitting all rows at once or in parts gives the same statistics.
        The shrinkage weight is kept.
        """
        n_tasks = max(self.n_tasks, int(task_index.max()) + 1)
        new_means, new_counts = _task_means(features, task_index, n_tasks)
        old_means = np.zeros((n_tasks, features.shape[1]))
        old_counts = np.zeros(n_tasks)
        old_means[: self.n_tasks] = _array(self.means)
        old_counts[: self.n_tasks] = _array(self.counts)
        counts = old_counts + new_counts
        safe = np.maximum(counts, 1.0)[:, None]
        means = (old_means * old_counts[:, None] + new_means * new_counts[:, None]) / safe
        centred = features.astype(np.float64) - new_means[task_index]
        between = (old_means - new_means) * np.sqrt(old_counts * new_counts / np.maximum(counts, 1.0))[:, None]
        scatter = _array(self.covariance) * old_counts.sum() + centred.T @ centred + between.T @ between
        device = self.means.device
        self.means = torch.as_tensor(means, dtype=torch.float32, device=device)
        self.counts = torch.as_tensor(counts, dtype=torch.float32, device=device)
        self.covariance = torch.as_tensor(scatter / max(counts.sum(), 1.0), dtype=torch.float32, device=device)
        self._discriminant = None

    def _coefficients(self) -> tuple[np.ndarray, np.ndarray]:
        """``(W, b)`` of the linear discriminant ``x W + b``, computed once per state."""
        if self._discriminant is None:
            covariance, alpha = _array(self.covariance), float(self.shrinkage)
            dim = covariance.shape[0]
            scale = max(np.trace(covariance) / dim, np.finfo(np.float64).tiny)
            shrunk = (1.0 - alpha) * covariance + alpha * scale * np.eye(dim)
            means = _array(self.means)
            weights = np.linalg.solve(shrunk, means.T)  # Sigma^-1 mu_t, (dim, n_tasks)
            bias = -0.5 * np.einsum("td,dt->t", means, weights)  # equal priors: no log-prior term
            bias[_array(self.counts) == 0] = -np.inf  # a task without rows is never inferred
            self._discriminant = (weights, bias)
        return self._discriminant

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Posterior probability of each task for each row, shape ``(n_rows, n_tasks)``."""
        weights, bias = self._coefficients()
        scores = features.astype(np.float64) @ weights + bias
        scores -= scores.max(axis=1, keepdims=True)
        probabilities = np.exp(scores)
        return probabilities / probabilities.sum(axis=1, keepdims=True)


def _array(tensor: torch.Tensor) -> np.ndarray:
    """A float64 numpy copy of a buffer, wherever it lives."""
    return tensor.detach().cpu().numpy().astype(np.float64)


def _task_means(features: np.ndarray, task_index: np.ndarray, n_tasks: int) -> tuple[np.ndarray, np.ndarray]:
    """Each task's mean row (zero where it has none) and row count."""
    counts = np.bincount(task_index, minlength=n_tasks).astype(np.float64)
    sums = np.zeros((n_tasks, features.shape[1]))
    np.add.at(sums, task_index, features.astype(np.float64))
    return sums / np.maximum(counts, 1.0)[:, None], counts
