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

__all__ = ["exact_match_score", "rouge_l", "rouge_l_score", "rouge_tokens"]

_SEPARATORS = re.compile(r"[^a-z0-9]+")


def rouge_tokens(text: str) -> list[str]:
    """Tokens as ``rouge-score`` makes them: lower case, alphanumeric runs.

    The text is lower-cased and every run of characters other than ``a-z`` and
    ``0-9`` separates tokens (no stemming), as in the ``rouge-score`` package
    without its stemmer.

    Parameters
    ----------
    text : str
        The text to split.

    Returns
    -------
    tokens : list of str
        The tokens in order; empty when ``text`` has no letters or digits.

    See Also
    --------
    skillfit.metrics.rouge_l : ROUGE-L F1 of two texts, on these tokens.
    skillfit.metrics.rouge_l_score : Mean ROUGE-L F1 over pairs of texts.

    References
    ----------
    .. [1] Lin. "ROUGE: A Package for Automatic Evaluation of Summaries." Text Summarization
       Branches Out, ACL Workshop 2004.

    Examples
    --------
    >>> from skillfit.metrics import rouge_tokens
    >>> rouge_tokens("The cat -- sat, on the MAT!")
    ['the', 'cat', 'sat', 'on', 'the', 'mat']
    >>> rouge_tokens("...")
    []
    """
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
    """ROUGE-L F1 between one prediction and one reference (0 when either has no tokens).

    ROUGE-L [1]_ compares the two texts' tokens (:func:`~skillfit.metrics.rouge_tokens`)
    by their longest common subsequence (LCS): precision is the LCS length over the
    prediction's length, recall the LCS length over the reference's, and the score
    their harmonic mean (F1).

    Parameters
    ----------
    prediction : str
        The generated text.
    reference : str
        The expected text.

    Returns
    -------
    score : float
        ROUGE-L F1 in [0, 1]: 1 when the token sequences are equal, 0 when they share
        no token or either text has none.

    See Also
    --------
    skillfit.metrics.rouge_l_score : Mean of this score over pairs of texts.
    skillfit.metrics.rouge_tokens : How the texts are split into tokens.

    References
    ----------
    .. [1] Lin. "ROUGE: A Package for Automatic Evaluation of Summaries." Text Summarization
       Branches Out, ACL Workshop 2004.

    Examples
    --------
    >>> from skillfit.metrics import rouge_l
    >>> rouge_l("the cat sat", "the cat")  # precision 2/3, recall 1
    0.8
    >>> rouge_l("The cat!", "the cat")
    1.0
    >>> rouge_l("hello", "goodbye")
    0.0
    """
    predicted, expected = rouge_tokens(prediction), rouge_tokens(reference)
    common = _lcs_length(expected, predicted)
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def rouge_l_score(y_true: Sequence[str], y_pred: Sequence[str]) -> float:
    """Mean ROUGE-L F1 over pairs of reference and prediction.

    The score the Seq2Seq estimators report with ``scoring="rougeL"``: for each pair,
    the ROUGE-L F1 [1]_ of :func:`~skillfit.metrics.rouge_l`, then the mean.

    Parameters
    ----------
    y_true : sequence of str
        Reference texts.
    y_pred : sequence of str
        Predicted texts, as many as ``y_true``.

    Returns
    -------
    score : float
        Mean ROUGE-L F1, in [0, 1].

    Raises
    ------
    ValueError
        If ``y_true`` and ``y_pred`` differ in length or are empty.
    TypeError
        If a text is not a str.

    See Also
    --------
    skillfit.metrics.rouge_l : ROUGE-L F1 of one pair of texts.
    skillfit.metrics.exact_match_score : Fraction of exactly matching texts.

    References
    ----------
    .. [1] Lin. "ROUGE: A Package for Automatic Evaluation of Summaries." Text Summarization
       Branches Out, ACL Workshop 2004.

    Examples
    --------
    >>> from skillfit.metrics import rouge_l_score
    >>> rouge_l_score(["the cat sat", "spam"], ["the cat", "ham"])  # mean of 0.8 and 0
    0.4
    """
    _check_pairs(y_true, y_pred)
    return float(np.mean([rouge_l(pred, true) for true, pred in zip(y_true, y_pred)]))


def exact_match_score(y_true: Sequence[str], y_pred: Sequence[str]) -> float:
    """Fraction of predictions equal to their reference after stripping surrounding whitespace.

    The comparison is otherwise exact: case, punctuation and inner whitespace count.
    This is a stricter form of the exact-match score of SQuAD [1]_, which also
    lower-cases the texts and drops punctuation and articles before comparing.

    Parameters
    ----------
    y_true : sequence of str
        Reference texts.
    y_pred : sequence of str
        Predicted texts, as many as ``y_true``.

    Returns
    -------
    score : float
        Fraction of pairs that match, in [0, 1].

    Raises
    ------
    ValueError
        If ``y_true`` and ``y_pred`` differ in length or are empty.
    TypeError
        If a text is not a str.

    See Also
    --------
    skillfit.metrics.rouge_l_score : A softer score, by longest common subsequence.

    References
    ----------
    .. [1] Rajpurkar, Zhang, Lopyrev, Liang. "SQuAD: 100,000+ Questions for Machine
       Comprehension of Text." EMNLP 2016 (arXiv:1606.05250).

    Examples
    --------
    >>> from skillfit.metrics import exact_match_score
    >>> round(exact_match_score(["spam", "ham", "ham"], [" spam ", "ham", "Ham"]), 4)
    0.6667
    """
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
