"""Scores for generated text: ROUGE-L F1 and exact match.

ROUGE-L follows the ``rouge-score`` package (Google's reference implementation)
without stemming: texts are lower-cased, every run of characters other than ``a-z`` and
``0-9`` is a separator, and the F-measure of the longest common subsequence of tokens
is reported. Written here (about 30 lines) rather than adding ``rouge-score`` and its
``nltk`` / ``absl`` dependencies; the tests check it against values from that package.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

_SEPARATORS = re.compile(r"[^a-z0-9]+")


def rouge_tokens(text: str) -> list[str]:
    """Tokens as ``rouge-score`` makes them: lower case, alphanumeric runs."""
    return [token for token in _SEPARATORS.sub(" ", text.lower()).split() if token]


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    if not a or not b:
        return 0
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if token == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 between one prediction and one reference (0 when either has no tokens)."""
    predicted, expected = rouge_tokens(prediction), rouge_tokens(reference)
    common = _lcs_length(expected, predicted)
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def rouge_l_score(y_true: Sequence[str], y_pred: Sequence[str]) -> float:
    """Mean ROUGE-L F1 over pairs of reference and prediction.

    Parameters
    ----------
    y_true, y_pred : sequences of str of the same length

    Returns
    -------
    float in [0, 1]
    """
    _check_pairs(y_true, y_pred)
    return float(np.mean([rouge_l(pred, true) for true, pred in zip(y_true, y_pred)]))


def exact_match_score(y_true: Sequence[str], y_pred: Sequence[str]) -> float:
    """Fraction of predictions equal to their reference after stripping surrounding whitespace."""
    _check_pairs(y_true, y_pred)
    return float(np.mean([str(pred).strip() == str(true).strip() for true, pred in zip(y_true, y_pred)]))


def _check_pairs(y_true: Sequence[str], y_pred: Sequence[str]) -> None:
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true and y_pred have different lengths: {len(y_true)} and {len(y_pred)}.")
    if len(y_true) == 0:
        raise ValueError("Scores need at least one pair of reference and prediction.")
    bad = [type(value).__name__ for value in list(y_true) + list(y_pred) if not isinstance(value, str)]
    if bad:
        raise TypeError(f"Texts to score must be str; got {sorted(set(bad))}.")


SCORERS = {"rougeL": rouge_l_score, "exact_match": exact_match_score}
