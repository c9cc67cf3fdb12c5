"""Holding out validation rows in proportion to every stratum (task, or task and label)."""

from __future__ import annotations

import numpy as np


def stratified_split(keys: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split row indices into ``(train, validation)`` with ``fraction`` of each stratum held out.

    Each stratum (rows sharing a key) gives ``floor(fraction * n)`` rows, and the
    rows left to reach ``round(fraction * n_rows)`` go to the strata with the largest
    remainders, ties broken at random. A stratum never gives its last row, so every
    task and label keeps at least one training row.

    Parameters
    ----------
    keys : ndarray of shape (n_rows,)
        The stratum of each row.
    fraction : float
        Share of the rows to hold out, in (0, 1).
    rng : numpy Generator
        Drives which rows are held out.

    Returns
    -------
    train, validation : ndarray of int
        Sorted row indices.
    """
    strata, inverse = np.unique(keys, return_inverse=True)
    members = [np.flatnonzero(inverse == s) for s in range(len(strata))]
    sizes = np.asarray([len(rows) for rows in members])
    quotas = fraction * sizes
    taken = np.minimum(np.floor(quotas).astype(int), sizes - 1)
    wanted = int(round(fraction * len(keys)))
    can_give = taken < sizes - 1
    remainders = np.where(can_give, quotas - taken, -np.inf)
    tie_break = rng.random(len(strata))
    order = np.lexsort((tie_break, -remainders))
    for stratum in order[: max(0, wanted - int(taken.sum()))]:
        if np.isfinite(remainders[stratum]):
            taken[stratum] += 1
    held_out = [rng.permutation(rows)[:count] for rows, count in zip(members, taken)]
    validation = np.sort(np.concatenate(held_out)) if held_out else np.empty(0, dtype=int)
    if len(validation) == 0:
        raise ValueError(
            f"validation_fraction={fraction} of {len(keys)} rows holds out no validation row; raise "
            "validation_fraction, add data, or pass X_val and y_val to fit."
        )
    train = np.setdiff1d(np.arange(len(keys)), validation)
    return train, validation
