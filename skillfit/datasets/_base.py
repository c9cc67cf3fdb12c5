"""What the bundled-data loaders share: reading a CSV from package data, checking
``split``, and building the ``(data, target)`` pair or Bunch."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import pandas as pd
from sklearn.utils import Bunch

_DATA_PACKAGE = "skillfit.datasets"
CLASSIFICATION_COLUMNS = ("text", "task", "label", "split")
SPLITS = ("train", "test", "all")


@lru_cache(maxsize=4)
def read_frame(data_file: str, columns: tuple[str, ...] = CLASSIFICATION_COLUMNS) -> pd.DataFrame:
    """The gzipped CSV ``data_file`` of this package, all strings; callers must not mutate it."""
    resource = resources.files(_DATA_PACKAGE).joinpath(data_file)
    with resource.open("rb") as fh:
        frame = pd.read_csv(
            fh,
            compression="gzip",
            dtype=str,
            keep_default_na=False,
            na_filter=False,
        )
    if list(frame.columns) != list(columns):
        raise RuntimeError(f"corrupt bundled data {data_file}: columns {list(frame.columns)}")
    return frame


def check_split(split: object) -> None:
    if not isinstance(split, str) or split not in SPLITS:
        allowed = ", ".join(repr(s) for s in SPLITS)
        raise ValueError(f"split must be one of {allowed}; got {split!r}")


def select_split(frame: pd.DataFrame, split: str) -> pd.DataFrame:
    """A copy of the rows of ``split`` (every row for ``"all"``)."""
    if split != "all":
        frame = frame[frame["split"] == split]
    return frame.copy()


def bunch(frame: pd.DataFrame, target_column: str, return_X_y: bool, as_frame: bool, descr: str, **extra):
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


def load_classification(data_file: str, descr: str, split: object, return_X_y: bool, as_frame: bool):
    """The body of a classification loader: columns ``text, task, label, split``."""
    check_split(split)
    frame = select_split(read_frame(data_file), split)
    return bunch(frame, "label", return_X_y, as_frame, descr)
