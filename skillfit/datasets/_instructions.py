"""Loader for the bundled Super-NaturalInstructions tasks (text to text)."""

from __future__ import annotations

import json
from typing import Literal, Union

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from skillfit.datasets._base import bunch, check_split, read_frame, select_split

__all__ = ["load_instruction_tasks"]

_DATA_FILE = "data/instruction_tasks.csv.gz"
_DATA_COLUMNS = ("text", "task", "target", "references", "split")
_INFO_FILE = "data/instruction_task_info.csv.gz"
_INFO_COLUMNS = ("task", "kind", "categories", "definition")

# How Super-NaturalInstructions poses a task to a model (the template of its Tk-Instruct
# models, without demonstrations): the definition, then the instance.
PROMPT_TEMPLATE = "Definition: {definition}\n\nNow complete the following example -\nInput: {text}\nOutput:"

DESCR = """\
skillfit instruction tasks
==========================

Tasks of Super-NaturalInstructions (Wang et al. 2022, allenai/natural-instructions,
Apache-2.0), all from its training split (none is in splits/default/test_tasks.txt),
chosen for inputs and outputs short enough for a small language model, in five kinds:
classification, extraction, short generation, string and list manipulation, and
question answering. Each task keeps the first 96 instances of its file in file order:
the first 64 are the train split, the next 32 the test split. Every instance keeps all
of its reference outputs (``references``); ``target`` is the first. Each task has its
definition (``instructions=True`` puts it before the input, in the template of the
benchmark's Tk-Instruct models). Rebuild with
``python scripts/build_instruction_tasks.py --repo PATH``; the task list, sources and
licences are in ``docs/datasets.md``.
"""


def load_instruction_tasks(
    *,
    split: Literal["train", "test", "all"] = "train",
    instructions: bool = False,
    return_X_y: bool = False,
    as_frame: bool = True,
) -> Union[Bunch, tuple[pd.DataFrame, pd.Series], tuple[np.ndarray, np.ndarray]]:
    """Load the bundled instruction tasks of Super-NaturalInstructions.

    Text-to-text tasks of Super-NaturalInstructions [1]_, the benchmark of C-Poly [2]_
    and of Multi-Head Routing's transfer experiments [3]_, taken from its training split
    only. Each task has 64 train and 32 test instances (the first 96 of its file, in
    file order), the references of each instance, and a definition: the instruction
    that poses the task. Tasks are of five kinds (``kinds``): classification,
    extraction, short generation, string and list manipulation, and question
    answering. Scores in the paper's terms are ROUGE-L and exact match against the
    best of an instance's references (:func:`~skillfit.metrics.rouge_l_score` and
    :func:`~skillfit.metrics.exact_match_score` take lists of references).

    Parameters
    ----------
    split : {"train", "test", "all"}, default="train"
        Which rows to return; ``"all"`` returns both (see the ``split`` column of
        ``frame``). Rows are grouped by task, in the order of the task files.
    instructions : bool, default=False
        If True, each text becomes ``"Definition: <definition>\\n\\nNow complete the
        following example -\\nInput: <text>\\nOutput:"``, the way Super-NaturalInstructions
        poses its tasks; if False, texts are the instances' inputs as they are.
    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.
    as_frame : bool, default=True
        If True, ``data`` is a DataFrame with columns ``["text", "task"]`` and
        ``target`` a Series named ``"target"``; otherwise object ndarrays.

    Returns
    -------
    data : sklearn.utils.Bunch
        With ``data``, ``target`` (the first reference of each row), ``references``
        (a list per row of all its reference strings), ``frame`` (columns ``text,
        task, target, references, split``, references as JSON lists; None when
        ``as_frame=False``), ``task_names`` (sorted), ``definitions``, ``kinds`` and
        ``categories`` (dicts keyed by task; categories are the dataset's own) and
        ``DESCR``.
    (data, target) : tuple if ``return_X_y`` is True
        As described above.

    Raises
    ------
    ValueError
        If ``split`` is not one of ``"train"``, ``"test"``, ``"all"``.

    See Also
    --------
    skillfit.datasets.load_demo_text2text : Seven smaller text-to-text tasks.
    skillfit.CPolySeq2Seq : Shared and exclusive skills for text-to-text tasks.
    skillfit.metrics.rouge_l_score : ROUGE-L F1 against the best of several references.

    References
    ----------
    .. [1] Wang et al. "Super-NaturalInstructions: Generalization via Declarative
       Instructions on 1600+ NLP Tasks." EMNLP 2022 (arXiv:2204.07705).
    .. [2] Wang, Liu, Liu, Wei, Zhang, Zhou, Zhang. "Customizable Combination of
       Parameter-Efficient Modules for Multi-Task Learning." ICLR 2024 (arXiv:2312.03248).
    .. [3] Caccia, Ponti, Su, Pereira, Le Roux, Sordoni. "Multi-Head Adapter Routing for
       Cross-Task Generalization." NeurIPS 2023 (arXiv:2211.03831).

    Examples
    --------
    >>> from skillfit.datasets import load_instruction_tasks
    >>> tasks = load_instruction_tasks(split="test")
    >>> len(tasks.task_names) >= 60
    True
    >>> int(tasks.frame.groupby("task").size().min()), int(tasks.frame.groupby("task").size().max())
    (32, 32)
    >>> tasks.kinds["task1146_country_capital"]
    'question answering'
    >>> row = tasks.data.index[tasks.data["task"] == "task1146_country_capital"][0]
    >>> tasks.data["text"][row], tasks.target[row]
    ('Eritrea', 'Asmara')

    With ``instructions=True`` each text is posed with its task's definition:

    >>> X, y = load_instruction_tasks(split="test", instructions=True, return_X_y=True)
    >>> print(X["text"][row])
    Definition: In this task, you are given a country and you need to return the capital city of the given country
    <BLANKLINE>
    Now complete the following example -
    Input: Eritrea
    Output:
    """
    check_split(split)
    frame = select_split(read_frame(_DATA_FILE, _DATA_COLUMNS), split)
    info = read_frame(_INFO_FILE, _INFO_COLUMNS).set_index("task")
    definitions = info["definition"].to_dict()
    if instructions:
        frame["text"] = [
            PROMPT_TEMPLATE.format(definition=definitions[task], text=text)
            for text, task in zip(frame["text"], frame["task"])
        ]
    references = [json.loads(value) for value in frame["references"]]
    return bunch(
        frame, "target", return_X_y, as_frame, DESCR,
        references=references,
        definitions=definitions,
        kinds=info["kind"].to_dict(),
        categories={task: value.split("; ") if value else [] for task, value in info["categories"].items()},
    )
