"""Prediction in batches: padding, the order of rows into batches, chunks and the inference scope."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np
import torch


from ._batching import PREDICT_CHUNK_ROWS, evaluation_batches, pad_sequences, token_lengths


class PredictionBatchesMixin:
    """Prediction in batches: padding, batch order, chunks, the inference scope."""

    def _pad(
        self, sequences: list[list[int]], *, left: bool = False, pad_value: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pad id lists into ``(ids, attention_mask)`` on the fitted device (right, or left for generation)."""
        pad_value = self.tokenizer_.pad_token_id if pad_value is None else pad_value
        ids, attention_mask = pad_sequences(sequences, pad_value, left=left)
        return ids.to(self.device_, non_blocking=True), attention_mask.to(self.device_, non_blocking=True)

    def _iter_eval_batches(self, encoded: dict[str, Any], *, one_task_per_batch: bool = False) -> Iterator[np.ndarray]:
        """Prediction batches sorted by length (see :func:`~._batching.evaluation_batches`).

        Full batches of one task let each skill layer fold that task's update into its
        weight (``merged_inference``); the leftovers of all tasks share full batches,
        unless ``one_task_per_batch``.
        """
        return evaluation_batches(
            token_lengths(encoded), encoded["tasks"], self.batch_size, one_task_per_batch=one_task_per_batch
        )

    def _predict_rows(
        self, texts: list[str], task_index: np.ndarray, predict_encoded: Callable[[dict[str, Any]], np.ndarray]
    ) -> np.ndarray:
        """``predict_encoded`` over ``texts`` of tasks ``task_index``, tokenized ``PREDICT_CHUNK_ROWS`` at a time.

        Token ids exist for one chunk at a time, so memory stays bounded however many
        rows there are. The chunks follow the rows sorted by character length, so each
        holds texts of similar length and its batches pad as little as batches sorted
        over all rows; one inference scope spans the chunks, so every task's factors
        are still mixed once per call.
        """
        if len(texts) <= PREDICT_CHUNK_ROWS:
            return predict_encoded(self._encode(texts, task_index, None))
        by_length = np.argsort(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)), kind="stable")
        predictions = None
        with self._inference():
            for start in range(0, len(texts), PREDICT_CHUNK_ROWS):
                rows = by_length[start:start + PREDICT_CHUNK_ROWS]
                part = predict_encoded(self._encode([texts[i] for i in rows], task_index[rows], None))
                if predictions is None:
                    predictions = np.empty((len(texts),) + part.shape[1:], dtype=part.dtype)
                predictions[rows] = part
        return predictions

    def _inference(self):
        """The scope of a prediction pass: every task's factors mixed once, merged weights when ``merged_inference``."""
        return self.network_.context.inference(merge=self.merged_inference)
