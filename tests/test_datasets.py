"""Tests for the bundled datasets (``load_demo_tasks``, ``load_demo_text2text``, ``load_many_tasks``)."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd
import pytest
from sklearn.utils import Bunch

from skillfit.datasets import INSTRUCTIONS, load_demo_tasks, load_demo_text2text, load_many_tasks

EXPECTED_LABELS = {
    "tweet_sentiment": {"negative", "positive"},
    "movie_sentiment": {"negative", "positive"},
    "product_sentiment": {"negative", "positive"},
    "editorial_sentiment": {"negative", "neutral", "positive"},
    "question_type": {"abbreviation", "description", "entity", "human", "location", "numeric"},
    "sms_spam": {"ham", "spam"},
}


@pytest.fixture(scope="module")
def full() -> Bunch:
    return load_demo_tasks(split="all")


def test_bunch_structure(full: Bunch) -> None:
    assert isinstance(full, Bunch)
    for key in ("data", "target", "frame", "task_names", "DESCR"):
        assert key in full
    assert isinstance(full.data, pd.DataFrame)
    assert list(full.data.columns) == ["text", "task"]
    assert isinstance(full.target, pd.Series)
    assert list(full.frame.columns) == ["text", "task", "label", "split"]
    assert len(full.data) == len(full.target) == len(full.frame)
    assert full.task_names == sorted(EXPECTED_LABELS)
    assert isinstance(full.DESCR, str) and "sms_spam" in full.DESCR


def test_no_missing_or_empty_values(full: Bunch) -> None:
    frame = full.frame
    assert not frame.isna().any().any()
    assert (frame["text"].str.len() > 0).all()
    assert (frame["text"] == frame["text"].str.strip()).all()
    assert frame["text"].str.len().max() <= 500
    assert set(frame["split"]) == {"train", "test"}


def test_tasks_sizes_and_label_spaces(full: Bunch) -> None:
    frame = full.frame
    assert len(EXPECTED_LABELS) >= 6
    assert set(frame["task"]) == set(EXPECTED_LABELS)
    for task, labels in EXPECTED_LABELS.items():
        sub = frame[frame["task"] == task]
        assert 300 <= len(sub) <= 1000, task
        assert set(sub["label"]) == labels, task
        # every label appears in both splits (stratified split)
        for split in ("train", "test"):
            assert set(sub.loc[sub["split"] == split, "label"]) == labels, (task, split)


def test_split_proportions_and_partition(full: Bunch) -> None:
    train = load_demo_tasks(split="train")
    test = load_demo_tasks(split="test")
    assert len(train.frame) + len(test.frame) == len(full.frame)
    assert (train.frame["split"] == "train").all()
    assert (test.frame["split"] == "test").all()
    for task in EXPECTED_LABELS:
        n_train = (train.frame["task"] == task).sum()
        n_test = (test.frame["task"] == task).sum()
        assert abs(n_test / (n_train + n_test) - 0.25) < 0.02, task


def test_split_disjoint_and_no_duplicates(full: Bunch) -> None:
    frame = full.frame
    assert not frame.duplicated(["task", "text"]).any()
    for task in EXPECTED_LABELS:
        sub = frame[frame["task"] == task]
        train_texts = set(sub.loc[sub["split"] == "train", "text"])
        test_texts = set(sub.loc[sub["split"] == "test", "text"])
        assert not train_texts & test_texts, task


def test_deterministic() -> None:
    a = load_demo_tasks(split="all")
    b = load_demo_tasks(split="all")
    pd.testing.assert_frame_equal(a.frame, b.frame)
    # returned objects are independent copies
    a.frame.loc[0, "text"] = "mutated"
    c = load_demo_tasks(split="all")
    pd.testing.assert_frame_equal(b.frame, c.frame)


def test_return_X_y() -> None:
    X, y = load_demo_tasks(split="test", return_X_y=True)
    bunch = load_demo_tasks(split="test")
    assert isinstance(X, pd.DataFrame) and isinstance(y, pd.Series)
    pd.testing.assert_frame_equal(X, bunch.data)
    pd.testing.assert_series_equal(y, bunch.target)


@pytest.mark.parametrize("return_X_y", [False, True])
def test_as_frame_false(return_X_y: bool) -> None:
    result = load_demo_tasks(split="train", as_frame=False, return_X_y=return_X_y)
    if return_X_y:
        X, y = result
    else:
        X, y = result.data, result.target
        assert result.frame is None
        assert result.task_names == sorted(EXPECTED_LABELS)
    ref = load_demo_tasks(split="train")
    assert isinstance(X, np.ndarray) and isinstance(y, np.ndarray)
    assert X.dtype == object and y.dtype == object
    assert X.shape == (len(ref.data), 2)
    assert y.shape == (len(ref.data),)
    assert list(X[:, 0]) == ref.data["text"].tolist()
    assert list(X[:, 1]) == ref.data["task"].tolist()
    assert list(y) == ref.target.tolist()


@pytest.mark.parametrize("bad", ["validation", "TRAIN", "", None, 1])
def test_bad_split_raises(bad: object) -> None:
    with pytest.raises(ValueError, match="'train', 'test', 'all'"):
        load_demo_tasks(split=bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------ text-to-text
def test_text2text_holds_the_classification_tasks_and_a_generative_one() -> None:
    text2text = load_demo_text2text(split="all")
    classification = load_demo_tasks(split="all").frame
    frame = text2text.frame
    assert list(frame.columns) == ["text", "task", "target", "split"]
    assert text2text.task_names == sorted([*EXPECTED_LABELS, "dialog_reply"])
    # The classification rows are the same texts, split and order, with the label as target.
    same = frame[frame["task"] != "dialog_reply"].reset_index(drop=True)
    pd.testing.assert_frame_equal(same, classification.rename(columns={"label": "target"}))
    dialog = frame[frame["task"] == "dialog_reply"]
    assert dialog["split"].value_counts().to_dict() == {"train": 600, "test": 200}
    assert dialog["target"].nunique() > 500  # free text, not a handful of labels
    lengths = pd.concat([dialog["text"], dialog["target"]]).str.len()
    assert lengths.between(8, 99).all()
    assert not dialog["text"].duplicated().any()


def test_text2text_instructions_and_forms() -> None:
    X, y = load_demo_text2text(split="test", return_X_y=True)
    X_prompted, y_prompted = load_demo_text2text(split="test", instructions=True, return_X_y=True)
    pd.testing.assert_series_equal(y, y_prompted)
    for raw, prompted, task in zip(X["text"][:5], X_prompted["text"][:5], X["task"][:5]):
        assert prompted == f"{INSTRUCTIONS[task]}\n{raw}\nAnswer:"
    assert set(INSTRUCTIONS) == set(X["task"])
    X_array, y_array = load_demo_text2text(split="test", return_X_y=True, as_frame=False)
    assert X_array.shape == (len(X), 2) and X_array.dtype == object and y_array.dtype == object
    again, _ = load_demo_text2text(split="test", return_X_y=True)
    pd.testing.assert_frame_equal(X, again)
    with pytest.raises(ValueError, match="split must be one of"):
        load_demo_text2text(split="validation")


# ------------------------------------------------------------------ many tasks
MANY_TASKS_ROWS = {"train": 9276, "test": 4004}
MANY_TASKS_FAMILIES = {"trec": 95, "fortune": 66, "sentiment": 4, "domain": 6, "sms": 1}


@pytest.fixture(scope="module")
def many() -> Bunch:
    return load_many_tasks(split="all")


def test_many_tasks_rows_and_structure(many: Bunch) -> None:
    frame = many.frame
    assert list(frame.columns) == ["text", "task", "label", "split"]
    assert frame["split"].value_counts().to_dict() == MANY_TASKS_ROWS
    for split, n_rows in MANY_TASKS_ROWS.items():
        X, y = load_many_tasks(split=split, return_X_y=True)
        assert len(X) == len(y) == n_rows
    assert not frame.isna().any().any()
    assert (frame["text"].str.len() > 0).all() and frame["text"].str.len().max() <= 300
    assert (frame["text"] == frame["text"].str.strip()).all()
    assert "fortune:love-vs-science" in many.DESCR


def test_many_tasks_task_names_match_the_file(many: Bunch) -> None:
    with resources.files("skillfit.datasets").joinpath("data/many_tasks.csv.gz").open("rb") as fh:
        on_disk = pd.read_csv(fh, compression="gzip", dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(on_disk, many.frame)
    in_file = on_disk["task"]
    assert many.task_names == sorted(in_file.unique())
    assert len(many.task_names) >= 100
    families = pd.Series(many.task_names).str.split(":").str[0].value_counts().to_dict()
    assert families == MANY_TASKS_FAMILIES
    # rows are grouped by task, train rows before test rows
    assert (in_file != in_file.shift()).sum() == len(many.task_names)
    order = many.frame.assign(is_test=many.frame["split"] == "test").groupby("task", sort=False)["is_test"]
    assert order.apply(lambda s: s.is_monotonic_increasing).all()
    for split in ("train", "test"):
        assert load_many_tasks(split=split).task_names == many.task_names


def test_many_tasks_sizes_and_balanced_labels(many: Bunch) -> None:
    counts = many.frame.groupby(["task", "split", "label"]).size()
    per_task = counts.groupby(["task", "split"]).sum().unstack("split")
    assert per_task["train"].between(16, 128).all()
    assert (per_task["test"] >= 8).all()
    labels_per_task = counts.groupby(["task", "split"]).size().unstack("split")
    assert (labels_per_task == 2).all().all()  # binary, both labels in both splits
    assert (counts.groupby(["task", "split"]).nunique() == 1).all()  # balanced
    labels = many.frame.groupby("task")["label"].unique()
    assert sorted(labels["trec:city-vs-country"]) == ["city", "country"]
    assert sorted(labels["sentiment:tweet"]) == ["negative", "positive"]
    # tasks share labels: "negative"/"positive" serve the four sentiment tasks
    assert (many.frame.groupby("label")["task"].nunique() > 1).sum() >= 30


def test_many_tasks_no_text_in_both_splits(many: Bunch) -> None:
    frame = many.frame
    assert not frame.duplicated(["task", "text"]).any()
    train_texts = set(frame.loc[frame["split"] == "train", "text"])
    test_texts = set(frame.loc[frame["split"] == "test", "text"])
    assert not train_texts & test_texts


def test_many_tasks_return_X_y_and_as_frame() -> None:
    bunch = load_many_tasks(split="test")
    X, y = load_many_tasks(split="test", return_X_y=True)
    assert isinstance(X, pd.DataFrame) and isinstance(y, pd.Series)
    pd.testing.assert_frame_equal(X, bunch.data)
    pd.testing.assert_series_equal(y, bunch.target)
    array = load_many_tasks(split="test", as_frame=False)
    assert array.frame is None and array.task_names == bunch.task_names
    X_array, y_array = load_many_tasks(split="test", as_frame=False, return_X_y=True)
    assert X_array.dtype == object and y_array.dtype == object
    assert X_array.shape == (len(X), 2) and y_array.shape == (len(X),)
    assert list(X_array[:, 0]) == X["text"].tolist() and list(y_array) == y.tolist()
    # returned objects are independent copies
    bunch.frame.loc[0, "text"] = "mutated"
    assert load_many_tasks(split="test").frame.loc[0, "text"] != "mutated"


@pytest.mark.parametrize("bad", ["validation", "TRAIN", None])
def test_many_tasks_bad_split_raises(bad: object) -> None:
    with pytest.raises(ValueError, match="'train', 'test', 'all'"):
        load_many_tasks(split=bad)  # type: ignore[arg-type]
