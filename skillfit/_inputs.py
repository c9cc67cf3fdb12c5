"""Turning ``X`` and ``y`` in any accepted form into texts, task ids and labels.

Accepted ``X`` (``docs/guide.md``, "Inputs"): a pandas DataFrame with a text and a task
column, a list of ``(text, task)`` pairs, or an object array of shape ``(n, 2)``. Every
problem gets a ``ValueError`` or ``TypeError`` that says what to change.
"""

from __future__ import annotations

import math
from numbers import Integral
from collections.abc import Iterator, Mapping, Set as AbstractSet
from typing import Any, Sequence

import numpy as np
from sklearn.exceptions import DataConversionWarning
from sklearn.utils.multiclass import check_classification_targets, type_of_target

from ._warnings import warn_user

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_X_FORMS = (
    "a pandas DataFrame with a text and a task column, a list of (text, task) pairs, "
    "or an object array of shape (n_samples, 2)"
)


def _is_missing(value: Any) -> bool:
    """None, NaN of any float type, and pandas' NA / NaT."""
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return True
    return type(value).__name__ in ("NAType", "NaTType")


def _columns_of(X: Any, text_column: str, task_column: str) -> tuple[Sequence[Any], Sequence[Any]]:
    if hasattr(X, "tocsr") or hasattr(X, "todense"):
        raise TypeError(f"Sparse input is not supported: X must be {_X_FORMS}.")
    if isinstance(X, np.ndarray) and np.iscomplexobj(X):
        raise ValueError(f"Complex data not supported: X must be {_X_FORMS}.")
    if hasattr(X, "columns") and hasattr(X, "iloc"):
        missing = [column for column in (text_column, task_column) if column not in X.columns]
        if missing:
            raise ValueError(
                f"X is missing the column(s) {missing}; it has columns {list(X.columns)}. "
                "Name your columns with the estimator's text_column= and task_column= parameters."
            )
        repeated = [column for column in dict.fromkeys((text_column, task_column)) if list(X.columns).count(column) > 1]
        if repeated:
            raise ValueError(
                f"X has several columns named {repeated}; keep one of each (e.g. "
                "X.loc[:, ~X.columns.duplicated()]) or rename them."
            )
        return X[text_column].tolist(), X[task_column].tolist()
    if isinstance(X, Iterator):
        raise TypeError(f"X must be {_X_FORMS}; got a {type(X).__name__}, which can be read only once. "
                        "Pass list(X).")
    if isinstance(X, (str, bytes)) or not hasattr(X, "__len__"):
        raise TypeError(f"X must be {_X_FORMS}; got {type(X).__name__}.")
    if isinstance(X, (AbstractSet, Mapping)) or type(X).__name__ in ("dict_keys", "dict_values", "dict_items"):
        hint = "pd.DataFrame(X)" if isinstance(X, Mapping) else "a list, in the order of y"
        raise TypeError(
            f"X must be {_X_FORMS}; got a {type(X).__name__}, whose rows have no order to match y by. "
            f"Pass {hint}."
        )
    if isinstance(X, np.ndarray):
        one_dimensional = X.ndim == 1
        rows = X.tolist() if X.ndim == 2 and X.shape[1] == 2 else None
    else:
        rows = list(X)
        one_dimensional = bool(rows) and all(_is_scalar(row) for row in rows)
        if not all(isinstance(row, (tuple, list, np.ndarray)) and len(row) == 2 for row in rows):
            rows = None
    if one_dimensional:
        raise ValueError(
            f"X must be {_X_FORMS}; got a 1-dimensional {type(X).__name__}. "
            "Reshape your data into (text, task) pairs: pair each text with its task id."
        )
    if rows is None:
        shape = getattr(X, "shape", (len(X),))
        raise ValueError(
            f"X must be {_X_FORMS}; got {type(X).__name__} of shape {tuple(shape)}. "
            "Each row needs exactly two entries: the text and its task id."
        )
    return [row[0] for row in rows], [row[1] for row in rows]


def _is_scalar(value: Any) -> bool:
    """A cell rather than a row: a string, bytes, or anything that is not a sequence or an array."""
    if isinstance(value, (str, bytes)):
        return True
    return not isinstance(value, (Sequence, np.ndarray, AbstractSet, Mapping)) or getattr(value, "ndim", 1) == 0


def _check_task_ids(tasks: Sequence[Any]) -> np.ndarray:
    missing = [i for i, task in enumerate(tasks) if _is_missing(task)]
    if missing:
        raise ValueError(f"Task ids are missing (None or NaN) at rows {missing[:10]}; every row needs a task id.")
    if all(isinstance(task, Integral) and not isinstance(task, (bool, np.bool_)) for task in tasks):
        too_large = next((i for i, task in enumerate(tasks) if not INT64_MIN <= int(task) <= INT64_MAX), None)
        if too_large is not None:
            raise ValueError(
                f"Task id {tasks[too_large]} (row {too_large}) does not fit in a 64-bit integer; integer task ids must "
                f"lie in [{INT64_MIN}, {INT64_MAX}]. Use strings as task ids instead (str(task))."
            )
        return np.asarray([int(task) for task in tasks], dtype=np.int64)
    if all(isinstance(task, str) for task in tasks):
        array = np.empty(len(tasks), dtype=object)
        array[:] = list(tasks)
        return array
    kinds = sorted({type(task).__name__ for task in tasks})
    got = f"task ids of type {kinds[0]}" if len(kinds) == 1 else f"a mix of types {kinds}"
    raise TypeError(f"Task ids must be all strings or all integers; got {got}. Convert them to one kind, "
                    "for example [str(task) for task in tasks].")


def check_texts_and_tasks(X: Any, *, text_column: str = "text", task_column: str = "task") -> tuple[list[str], np.ndarray]:
    """Validate ``X`` and split it into texts and task ids.

    Parameters
    ----------
    X : DataFrame, list of (text, task) or array of shape (n_samples, 2)
        The inputs.
    text_column, task_column : str
        Column names used when ``X`` is a DataFrame.

    Returns
    -------
    texts : list of str
    tasks : ndarray of shape (n_samples,)
        ``int64`` when every task id is an integer, else ``object`` holding strings.
    """
    texts, tasks = _columns_of(X, text_column, task_column)
    _check_texts(texts)
    task_ids = _check_task_ids(tasks)
    _warn_if_swapped(task_ids)
    return list(texts), task_ids


def is_text_only(X: Any, text_column: str = "text", task_column: str = "task") -> bool:
    """Whether ``X`` holds texts without task ids: a 1-d sequence of strings, or a DataFrame without the task column."""
    if hasattr(X, "columns") and hasattr(X, "iloc"):
        return text_column in X.columns and task_column not in X.columns
    if isinstance(X, (str, bytes, AbstractSet, Mapping)) or not hasattr(X, "__len__") or hasattr(X, "tocsr"):
        return False
    if isinstance(X, np.ndarray):
        return X.ndim == 1 and len(X) > 0 and all(isinstance(text, str) for text in X.tolist())
    return len(X) > 0 and all(isinstance(text, str) for text in X)


def check_texts_and_optional_tasks(
    X: Any, *, text_column: str = "text", task_column: str = "task"
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Validate prediction inputs, whose task ids may be missing.

    Accepts what :func:`check_texts_and_tasks` accepts, with missing task ids (None,
    NaN, pandas NA) allowed, and texts alone: a list, Series or 1-d array of strings,
    or a DataFrame without the task column.

    Returns
    -------
    texts : list of str
    tasks : ndarray of shape (n_samples,)
        The given task ids (``int64`` or ``object``); a placeholder where missing.
    has_task : ndarray of bool, shape (n_samples,)
        Where a task id is given.
    """
    if is_text_only(X, text_column, task_column):
        texts = X[text_column].tolist() if hasattr(X, "columns") else list(X)
        tasks: Sequence[Any] = [None] * len(texts)
    else:
        texts, tasks = _columns_of(X, text_column, task_column)
    _check_texts(texts)
    has_task = np.asarray([not _is_missing(task) for task in tasks], dtype=bool)
    given = _check_task_ids([task for task, present in zip(tasks, has_task) if present]) if has_task.any() else None
    if given is None or given.dtype == object:
        task_ids = np.full(len(texts), None, dtype=object)
    else:
        task_ids = np.zeros(len(texts), dtype=np.int64)
    if given is not None:
        task_ids[has_task] = given
    if has_task.all():
        _warn_if_swapped(task_ids)
    return list(texts), task_ids, has_task


def _check_texts(texts: Sequence[Any]) -> None:
    if len(texts) == 0:
        raise ValueError("X has 0 samples; at least one (text, task) pair is required.")
    missing = next((i for i, text in enumerate(texts) if _is_missing(text)), None)
    if missing is not None:
        raise ValueError(f"Row {missing} has no text (None or NaN); drop the rows without text or fill them in.")
    _check_strings(
        texts, "Every text must be a str; row {i} holds {kind} {value}. Put the text first and the task id "
        "second in each pair.", "Row {i} holds an empty text; remove it or give it content.", "Row",
    )


def _warn_if_swapped(task_ids: np.ndarray) -> None:
    if len(task_ids) >= 20 and len(set(task_ids.tolist())) == len(task_ids):
        warn_user(
            f"Every one of the {len(task_ids)} rows of X has a task id of its own (e.g. {task_ids.tolist()[:2]}); "
            "is each pair (task, text) instead of (text, task)? Put the text first, or name the DataFrame "
            "columns with text_column= and task_column=.",
            UserWarning,
        )


def _check_strings(values: Sequence[Any], not_a_string: str, empty: str, where: str) -> None:
    """TypeError for the first non-string, ValueError for the first blank or not-encodable one (messages formatted with i)."""
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise TypeError(not_a_string.format(i=i, kind=type(value).__name__, value=_short(value)))
        if not value.strip():
            raise ValueError(empty.format(i=i))
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ValueError(
                f"{where} {i} holds a string that is not valid Unicode text: {error.reason} at "
                f"character {error.start} ({value[error.start:error.end]!r}), which no tokenizer can encode. Decode "
                "your bytes with errors='replace', or drop the character (text.encode('utf-8', 'replace').decode())."
            ) from None


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (a long cell would flood the message)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _target_values(y: Any, n_samples: int, names: tuple[str, str] = ("X", "y")) -> list[Any]:
    """``y`` as a list of one target per sample (a column vector is flattened with a warning).

    ``names`` are the arguments' names in messages (``("X_val", "y_val")`` for validation data).
    """
    x_name, y_name = names
    if y is None:
        raise ValueError(f"This estimator requires {y_name} to be passed, but the target {y_name} is None.")
    if isinstance(y, str) or not (hasattr(y, "__len__") or hasattr(y, "__array__")):
        raise TypeError(f"y must be a 1-d array-like of targets; got {type(y).__name__}.")
    try:
        array = np.asarray(y, dtype=object) if not hasattr(y, "iloc") else np.asarray(y.to_numpy(), dtype=object)
    except ValueError as error:  # numpy's "inhomogeneous shape" of ragged nested lists
        raise ValueError("y must be a 1-d array-like with one target per sample; got nested sequences "
                         "of different lengths.") from error
    if array.ndim == 2 and array.shape[1] == 1:
        warn_user(
            "A column-vector y was passed when a 1d array was expected; it was flattened with ravel().",
            DataConversionWarning,
        )
        array = array.ravel()
    if array.ndim != 1:
        raise ValueError(f"y must be 1-dimensional; got shape {array.shape}.")
    if len(array) != n_samples:
        raise ValueError(
            f"{x_name} and {y_name} have different lengths: {x_name} has {n_samples} samples, {y_name} has {len(array)}."
        )
    values = array.tolist()
    nested = next((i for i, value in enumerate(values) if isinstance(value, (list, tuple, set, dict, np.ndarray))), None)
    if nested is not None:
        raise ValueError(
            f"y must hold one target per sample; y[{nested}] is a {type(values[nested]).__name__}. "
            "Pass a 1-d array-like of labels (or of target texts)."
        )
    return values


def check_labels(y: Any, n_samples: int, names: tuple[str, str] = ("X", "y")) -> np.ndarray:
    """Validate classification labels: one per sample, none missing, discrete.

    Returns
    -------
    ndarray of shape (n_samples,)
    """
    values = _target_values(y, n_samples, names)
    missing = [i for i, label in enumerate(values) if _is_missing(label)]
    if missing:
        raise ValueError(f"y has missing labels (None or NaN) at positions {missing[:10]}; drop those rows or label them.")
    if all(isinstance(label, str) for label in values):
        labels = np.empty(len(values), dtype=object)
        labels[:] = values
    else:
        kinds = {type(label) for label in values}
        if any(issubclass(kind, str) for kind in kinds):
            raise TypeError(f"Labels must be all strings or all numbers; got a mix of {sorted(k.__name__ for k in kinds)}.")
        labels = np.asarray(values)
    try:
        check_classification_targets(labels)
    except TypeError:  # scikit-learn refuses bytes labels
        raise TypeError(f"{names[1]} holds bytes labels (e.g. {_short(values[0])}); decode them to strings first "
                        "(label.decode()), or use integers.") from None
    except ValueError:
        kind = type_of_target(labels)
        raise ValueError(
            f"{names[1]} holds {kind} values (e.g. {_short(values[0])}); a classifier needs discrete labels. "
            f"Pass class labels (strings or integers), or bin the values first; to predict text, use a ...Seq2Seq."
        ) from None
    return labels


def check_target_texts(y: Any, n_samples: int, names: tuple[str, str] = ("X", "y")) -> list[str]:
    """Validate text-to-text targets: one non-empty string per sample.

    Returns
    -------
    list of str
    """
    values = _target_values(y, n_samples, names)
    _check_strings(
        values, "Every target must be a str; position {i} holds {kind} {value}. Text-to-text estimators "
        "generate text: convert labels to words, or use a ...Classifier.",
        "Target {i} is empty; every example needs a non-empty target text.", "Target",
    )
    return values
