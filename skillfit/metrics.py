"""Scores for generated text: ROUGE-L F1 and exact match.

ROUGE-L follows the ``rouge-score`` package (Google's reference implementation):
texts are lower-cased, every run of characters other than ``a-z`` and ``0-9`` is a
separator, and the F-measure of the longest common subsequence of tokens is reported;
with ``stem=True`` tokens longer than three characters are Porter-stemmed, as
``rouge-score``'s ``use_stemmer=True`` does (this needs ``nltk``, whose stemmer
``rouge-score`` uses too). Written here (about 30 lines) rather than adding
``rouge-score`` and its ``nltk`` / ``absl`` dependencies; the tests check it against
values from that package.

A reference may be one text or a list of texts: the score is then the best over them,
as Super-NaturalInstructions scores instances with several reference outputs
(Wang et al. 2022, ``metric_max_over_ground_truths``).
"""

from __future__ import annotations

import re
import string
from functools import lru_cache
from typing import Callable, Sequence, Union

import numpy as np

__all__ = ["exact_match_score", "normalize_answer", "rouge_l", "rouge_l_score", "rouge_tokens"]

_SEPARATORS = re.compile(r"[^a-z0-9]+")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)

Reference = Union[str, Sequence[str]]  # one reference text, or several (the best counts)


def rouge_tokens(text: str, stem: bool = False) -> list[str]:
    """Tokens as ``rouge-score`` makes them: lower case, alphanumeric runs.

    The text is lower-cased and every run of characters other than ``a-z`` and
    ``0-9`` separates tokens (no stemming), as in the ``rouge-score`` package
    without its stemmer.

    Parameters
    ----------
    text : str
        The text to split.
    stem : bool, default=False
        Porter-stem the tokens longer than three characters, as ``rouge-score`` does
        with ``use_stemmer=True`` (needs ``nltk``).

    Returns
    -------
    tokens : list of str
        The tokens in order; empty when ``text`` has no letters or digits.

    Raises
    ------
    ImportError
        If ``stem=True`` and ``nltk`` is not installed.

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
    >>> rouge_tokens("The cats are running", stem=True)
    ['the', 'cat', 'are', 'run']
    """
    tokens = [token for token in _SEPARATORS.sub(" ", text.lower()).split() if token]
    if stem:
        stemmer = _porter_stem()
        tokens = [stemmer(token) if len(token) > 3 else token for token in tokens]
    return tokens


@lru_cache(maxsize=1)
def _porter_stem() -> Callable[[str], str]:
    try:
        from nltk.stem import porter
    except ImportError as error:
        raise ImportError(
            "stem=True needs nltk's Porter stemmer (the one rouge-score uses): pip install nltk"
        ) from error
    return lru_cache(maxsize=65536)(porter.PorterStemmer().stem)


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


def rouge_l(prediction: str, reference: Reference, *, stem: bool = False) -> float:
    """ROUGE-L F1 between one prediction and one reference (0 when either has no tokens).

    ROUGE-L (Lin 2004) compares the two texts' tokens (:func:`~skillfit.metrics.rouge_tokens`)
    by their longest common subsequence (LCS): precision is the LCS length over the
    prediction's length, recall the LCS length over the reference's, and the score
    their harmonic mean (F1). Given several references, the best score counts.

    Parameters
    ----------
    prediction : str
        The generated text.
    reference : str or sequence of str
        The expected text, or several acceptable ones (the best match counts).
    stem : bool, default=False
        Porter-stem tokens longer than three characters first (``rouge-score``'s
        ``use_stemmer=True``, the setting of Super-NaturalInstructions; needs ``nltk``).

    Returns
    -------
    score : float
        ROUGE-L F1 in [0, 1]: 1 when the token sequences are equal, 0 when they share
        no token or either text has none.

    See Also
    --------
    skillfit.metrics.rouge_l_score : Mean of this score over pairs of texts.
    skillfit.metrics.rouge_tokens : How the texts are split into tokens.


    Examples
    --------
    >>> from skillfit.metrics import rouge_l
    >>> rouge_l("the cat sat", "the cat")  # precision 2/3, recall 1
    0.8
    >>> rouge_l("The cat!", "the cat")
    1.0
    >>> rouge_l("hello", "goodbye")
    0.0
    >>> rouge_l("hello", ["goodbye", "hello there"])  # the best of two references
    0.6666666666666666
    >>> rouge_l("cats", "cat"), rouge_l("cats", "cat", stem=True)
    (0.0, 1.0)
    """
    predicted = rouge_tokens(prediction, stem)
    return max(_rouge_l_tokens(predicted, rouge_tokens(text, stem)) for text in _references(reference))


def _rouge_l_tokens(predicted: Sequence[str], expected: Sequence[str]) -> float:
    common = _lcs_length(expected, predicted)
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def _references(reference: Reference) -> Sequence[str]:
    return (reference,) if isinstance(reference, str) else reference


def rouge_l_score(y_true: Sequence[Reference], y_pred: Sequence[str], *, stem: bool = False) -> float:
    """Mean ROUGE-L F1 over pairs of reference and prediction.

    The score the Seq2Seq estimators report with ``scoring="rougeL"``: for each pair,
    the ROUGE-L F1 (Lin 2004) of :func:`~skillfit.metrics.rouge_l`, then the mean. A row may
    have several references; its best score counts. ``stem=True`` with lists of
    references is the ROUGE-L of Super-NaturalInstructions [2]_.

    Parameters
    ----------
    y_true : sequence of str or of sequences of str
        Reference texts: one per row, or a list of acceptable ones per row.
    y_pred : sequence of str
        Predicted texts, as many as ``y_true``.
    stem : bool, default=False
        Porter-stem tokens longer than three characters (needs ``nltk``).

    Returns
    -------
    score : float
        Mean ROUGE-L F1, in [0, 1].

    Raises
    ------
    ValueError
        If ``y_true`` and ``y_pred`` differ in length or are empty, or a row has an
        empty list of references.
    TypeError
        If a text is not a str.

    See Also
    --------
    skillfit.metrics.rouge_l : ROUGE-L F1 of one pair of texts.
    skillfit.metrics.exact_match_score : Fraction of exactly matching texts.

    References
    ----------
    .. [2] Wang et al. "Super-NaturalInstructions: Generalization via Declarative
       Instructions on 1600+ NLP Tasks." EMNLP 2022 (arXiv:2204.07705).

    Examples
    --------
    >>> from skillfit.metrics import rouge_l_score
    >>> rouge_l_score(["the cat sat", "spam"], ["the cat", "ham"])  # mean of 0.8 and 0
    0.4
    >>> rouge_l_score([["spam", "junk"], ["ham"]], ["junk", "ham"])  # best reference per row
    1.0
    """
    _check_pairs(y_true, y_pred)
    return float(np.mean([rouge_l(pred, true, stem=stem) for true, pred in zip(y_true, y_pred)]))


def normalize_answer(text: str) -> str:
    """A text as SQuAD's exact match compares it: lower case, no punctuation, articles or extra spaces.

    The normalisation of SQuAD [1]_, which Super-NaturalInstructions (Wang et al. 2022) uses for its
    exact match.

    Parameters
    ----------
    text : str
        The text to normalise.

    Returns
    -------
    normalized : str
        ``text`` lower-cased, without ASCII punctuation and the articles "a", "an"
        and "the", with runs of whitespace made single spaces and the ends stripped.

    See Also
    --------
    skillfit.metrics.exact_match_score : Exact match, with ``normalize=True`` on these texts.

    References
    ----------
    .. [1] Rajpurkar, Zhang, Lopyrev, Liang. "SQuAD: 100,000+ Questions for Machine
       Comprehension of Text." EMNLP 2016 (arXiv:1606.05250).

    Examples
    --------
    >>> from skillfit.metrics import normalize_answer
    >>> normalize_answer("  The  Eiffel-Tower! ")
    'eiffeltower'
    """
    text = "".join(char for char in text.lower() if char not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match_score(y_true: Sequence[Reference], y_pred: Sequence[str], *, normalize: bool = False) -> float:
    """Fraction of predictions equal to their reference after stripping surrounding whitespace.

    By default the comparison is otherwise exact: case, punctuation and inner
    whitespace count. ``normalize=True`` compares the texts as SQuAD (Rajpurkar et al. 2016) and
    Super-NaturalInstructions (Wang et al. 2022) do (:func:`~skillfit.metrics.normalize_answer`). A
    row may have several references; it matches if any does.

    Parameters
    ----------
    y_true : sequence of str or of sequences of str
        Reference texts: one per row, or a list of acceptable ones per row.
    y_pred : sequence of str
        Predicted texts, as many as ``y_true``.
    normalize : bool, default=False
        Lower-case both texts and drop punctuation, articles and extra whitespace
        before comparing.

    Returns
    -------
    score : float
        Fraction of pairs that match, in [0, 1].

    Raises
    ------
    ValueError
        If ``y_true`` and ``y_pred`` differ in length or are empty, or a row has an
        empty list of references.
    TypeError
        If a text is not a str.

    See Also
    --------
    skillfit.metrics.rouge_l_score : A softer score, by longest common subsequence.
    skillfit.metrics.normalize_answer : The normalisation of ``normalize=True``.


    Examples
    --------
    >>> from skillfit.metrics import exact_match_score
    >>> round(exact_match_score(["spam", "ham", "ham"], [" spam ", "ham", "Ham"]), 4)
    0.6667
    >>> exact_match_score([["The spam.", "junk"]], ["spam"], normalize=True)
    1.0
    """
    _check_pairs(y_true, y_pred)
    prepare = normalize_answer if normalize else str.strip
    return float(np.mean([
        any(prepare(pred) == prepare(text) for text in _references(true)) for true, pred in zip(y_true, y_pred)
    ]))


def _check_pairs(y_true: Sequence[Reference], y_pred: Sequence[str]) -> None:
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true and y_pred have different lengths: {len(y_true)} and {len(y_pred)}.")
    if len(y_true) == 0:
        raise ValueError("Scores need at least one pair of reference and prediction.")
    references = []
    for row, reference in enumerate(y_true):
        if isinstance(reference, str):
            references.append(reference)
        elif isinstance(reference, (list, tuple, np.ndarray)):
            if len(reference) == 0:
                raise ValueError(f"y_true[{row}] is an empty list of references; give each row at least one.")
            references.extend(reference)
        else:
            references.append(reference)
    bad = [type(value).__name__ for value in references + list(y_pred) if not isinstance(value, str)]
    if bad:
        raise TypeError(
            f"Texts to score must be str (a reference may also be a list of str); got {sorted(set(bad))}."
        )


SCORERS = {"rougeL": rouge_l_score, "exact_match": exact_match_score}
