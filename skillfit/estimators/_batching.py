"""Cutting encoded rows into batches: pure functions of lengths, task indices and an explicit RNG.

Training batches are random and, within each batch, sorted by task, so rows of one task
are a contiguous slice. Prediction batches are sorted by length; full batches hold one
task each, so each layer can fold that task's update into its weight, and the leftovers
of all tasks share full batches.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch

# Width, in tokens, of the length buckets of group_by_length.
LENGTH_BUCKET = 8
# Batches per pool that group_by_length sorts by length: more, less padding; fewer, more mixed batches.
LENGTH_POOL_BATCHES = 50

# Rows tokenized at once by predict: bounds its memory whatever the number of rows.
PREDICT_CHUNK_ROWS = 8192


def token_lengths(encoded: dict[str, Any]) -> np.ndarray:
    """Number of input tokens of each encoded row."""
    return np.asarray([len(ids) for ids in encoded["input_ids"]])


def training_batches(
    tasks: np.ndarray, batch_size: int, rng: np.random.Generator, *, lengths: np.ndarray | None = None
) -> list[np.ndarray]:
    """One epoch's batches of row indices, each sorted by task.

    Rows are shuffled. Given token ``lengths`` (``group_by_length``), the shuffled rows
    are cut into pools of ``LENGTH_POOL_BATCHES`` batches, sorted by length (in buckets
    of ``LENGTH_BUCKET`` tokens, random within a bucket) within each pool and cut into
    batches whose order is then shuffled: batches hold texts of similar length (little
    padding) and stay random.
    """
    n_samples, group_by_length = len(tasks), lengths is not None
    order = rng.permutation(n_samples)
    if group_by_length:
        # Coarse buckets, random within a bucket: sorting by exact length would put texts
        # that differ by one token apart, and where length follows the label (a keyword
        # added, a longer spam message) batches would hold one label each.
        buckets = np.asarray(lengths) // LENGTH_BUCKET
        pool = batch_size * LENGTH_POOL_BATCHES
        order = np.concatenate([
            chunk[np.lexsort((rng.random(len(chunk)), buckets[chunk]))]
            for chunk in (order[i : i + pool] for i in range(0, n_samples, pool))
        ])
    batches = [order[i : i + batch_size] for i in range(0, n_samples, batch_size)]
    if group_by_length:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return [batch[np.argsort(tasks[batch], kind="stable")] for batch in batches]


def evaluation_batches(
    lengths: np.ndarray, tasks: np.ndarray, batch_size: int, *, one_task_per_batch: bool = False
) -> Iterator[np.ndarray]:
    """Index batches for prediction, rows sorted by length within each (little padding).

    Each task's rows fill whole single-task batches first: a skill layer folds that
    task's update into its weight once, and the batch costs what the bare backbone
    costs. The rows left over (all of a task's rows when it has fewer than a batch) are
    pooled across tasks into full mixed batches, sorted by task inside each, which run
    unmerged: with hundreds of small tasks, prediction keeps full batches instead of
    one short batch and one set of merged weights per task. With
    ``one_task_per_batch``, leftovers stay in one short batch per task instead.
    """
    tasks = np.asarray(tasks)
    leftover = []
    for task in np.unique(tasks):
        rows = np.flatnonzero(tasks == task)
        rows = rows[np.argsort(lengths[rows], kind="stable")]
        n_full = len(rows) - len(rows) % batch_size
        for start in range(0, n_full, batch_size):
            yield rows[start : start + batch_size]
        if one_task_per_batch and n_full < len(rows):
            yield rows[n_full:]
        else:
            leftover.append(rows[n_full:])
    pooled = np.concatenate(leftover) if leftover else np.zeros(0, dtype=np.intp)
    pooled = pooled[np.argsort(lengths[pooled], kind="stable")]
    for start in range(0, len(pooled), batch_size):
        batch = pooled[start : start + batch_size]
        yield batch[np.argsort(tasks[batch], kind="stable")]


def pad_sequences(
    sequences: list[list[int]], pad_value: int, *, left: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad id lists into ``(ids, attention_mask)`` CPU tensors, on the right or (for generation) the left."""
    longest = max(len(sequence) for sequence in sequences)
    ids = torch.full((len(sequences), longest), pad_value, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        span = slice(longest - len(sequence), longest) if left else slice(0, len(sequence))
        ids[row, span] = torch.as_tensor(sequence, dtype=torch.long)
        attention_mask[row, span] = 1
    return ids, attention_mask
