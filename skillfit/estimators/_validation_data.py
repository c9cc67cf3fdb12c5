"""Validation during ``fit``: the rows held out or given, and the score of each epoch."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


from ._runtime import autocast
from ._training.validation_split import stratified_split


class ValidationDataMixin:
    """Validation rows (given or held out) and their scores after each epoch."""

    def _validation_task_indices(self, tasks: np.ndarray) -> np.ndarray:
        index, unknown = self._lookup_tasks(tasks)
        if unknown:
            raise ValueError(
                f"X_val has task id(s) {unknown[:10]} that X does not have; validate only on the tasks you train."
            )
        return index

    def _split_for_validation(self, texts: list[str], task_index: np.ndarray, targets: Any, X_val: Any, y_val: Any, rng):
        """``(train, validation, sized_for)``: rows to train on, validation rows or None, and what the network is sized for.

        Each is a ``(texts, task indices, targets)`` triple (``sized_for`` a pair of
        targets and task indices: the labels each task gets in the head). Validation
        rows must be of labels their task trains with.
        """
        if X_val is not None:
            val_texts, val_tasks = self._validated_inputs(X_val)
            val_index = self._validation_task_indices(val_tasks)
            val_targets = self._check_validation_targets(y_val, len(val_texts))
            self._check_validation_pairs(task_index, targets, val_index, val_targets)
            return (texts, task_index, targets), (val_texts, val_index, val_targets), (targets, task_index)
        if not self.early_stopping:
            return (texts, task_index, targets), None, (targets, task_index)
        keys = self._stratification_keys(task_index, targets)
        train_rows, val_rows = stratified_split(keys, self.validation_fraction, rng)
        train = ([texts[i] for i in train_rows], task_index[train_rows], _subset(targets, train_rows))
        validation = ([texts[i] for i in val_rows], task_index[val_rows], _subset(targets, val_rows))
        return train, validation, (targets, task_index)

    def _validation_scores(self, validation: dict[str, Any]) -> tuple[float, dict[Any, float]]:
        """The score over all validation rows and per task (higher is better).

        ``validation_scoring="loss"`` gives the negative mean loss (per example for
        classifiers, per target token for text-to-text); ``"score"`` gives what
        :meth:`score` reports (accuracy, ROUGE-L or exact match).
        """
        encoded, tasks, targets = validation["encoded"], validation["tasks"], validation["targets"]
        task_ids = self.tasks_.tolist()
        self.network_.eval()
        if self.validation_scoring == "score":
            predictions = self._predict_encoded(encoded)
            per_task = {}
            for task in np.unique(tasks):
                rows = np.flatnonzero(tasks == task)
                per_task[task_ids[task]] = self._prediction_score(_subset(targets, rows), _subset(predictions, rows))
            return self._prediction_score(targets, predictions), per_task
        sums: dict[int, list[float]] = {}
        with torch.no_grad(), autocast(self.device_), self._inference():
            for rows in self._iter_eval_batches(encoded, one_task_per_batch=True):  # a loss per task
                batch = self._make_batch(rows, encoded)
                units = self._loss_units(batch)
                task_sums = sums.setdefault(int(tasks[rows[0]]), [0.0, 0.0])
                task_sums[0] += float(self._task_loss(batch)) * units
                task_sums[1] += units
        per_task = {task_ids[task]: -loss / units for task, (loss, units) in sums.items()}
        total_loss, total_units = map(sum, zip(*sums.values()))
        return -total_loss / total_units, per_task


def _subset(targets: Any, rows: np.ndarray) -> Any:
    """The ``rows`` of encoded targets (an array of labels or a list of texts)."""
    return targets[rows] if isinstance(targets, np.ndarray) else [targets[i] for i in rows]
