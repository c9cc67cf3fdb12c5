"""The benchmark harness: data splits, fractions and the peft peers (so the benchmarks cannot silently break)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
peft = pytest.importorskip("peft")
quality = pytest.importorskip("quality")
from peers import PeftClassifier, fit_per_task, predict_per_task  # noqa: E402

from skillfit import PolyClassifier  # noqa: E402


@pytest.fixture(scope="module")
def quick_splits():
    return quality.load_splits(quality.PROFILES["quick"])


def test_splits_are_disjoint_stratified_and_sized(quick_splits):
    fit, validation, test = quick_splits["fit"], quick_splits["validation"], quick_splits["test"]
    per_task = quality.PROFILES["quick"].train_per_task
    assert len(fit) + len(validation) == 6 * per_task
    assert not set(zip(fit["text"], fit["task"])) & set(zip(validation["text"], validation["task"]))
    train_texts = set(quality.load_demo_tasks(split="train").frame["text"])
    assert set(fit["text"]) <= train_texts and set(validation["text"]) <= train_texts
    assert not set(test["text"]) & set(fit["text"])
    # Every task keeps every one of its labels in the fit set.
    labels = quality.load_demo_tasks(split="train").frame.groupby("task")["label"].nunique()
    assert (fit.groupby("task")["label"].nunique() == labels).all()
    assert (test.groupby("task").size() == quality.PROFILES["quick"].test_per_task).all()


def test_fractions_are_nested_per_task_prefixes(quick_splits):
    fit = quick_splits["fit"]
    small, large = quality.fraction_of(fit, 0.2), quality.fraction_of(fit, 0.5)
    sizes = small.groupby("task").size()
    assert (sizes == np.ceil(0.2 * fit.groupby("task").size())).all()
    assert set(small.index) <= set(large.index)
    pd.testing.assert_frame_equal(quality.fraction_of(fit, 1.0).sort_index(), fit.sort_index())


def test_per_task_accuracy_and_per_task_models():
    frame = pd.DataFrame({"text": ["a", "b", "c", "d"], "task": ["x", "x", "y", "y"], "label": ["1", "0", "1", "1"]})
    assert quality.per_task_accuracy(frame, ["1", "1", "1", "0"]) == {"x": 0.5, "y": 0.5}

    class Majority:
        def fit(self, X, y):
            values, counts = np.unique(y, return_counts=True)
            self.label = values[np.argmax(counts)]
            return self

        def predict(self, X):
            return np.full(len(X), self.label, dtype=object)

    models = fit_per_task(Majority, ["a", "b", "b", "c", "d"], np.array(["p", "p", "q", "r", "r"]), np.array(["x", "x", "x", "y", "y"]))
    predictions = predict_per_task(models, ["e", "f"], np.array(["y", "x"]))
    assert predictions.tolist() == ["r", "p"]


def test_peft_poly_peer_matches_our_poly_in_size_and_trains(bert_path, multitask):
    X, y = multitask
    settings = dict(backbone=bert_path, max_epochs=1, batch_size=16, rank=4, max_length=32, random_state=0)
    peer = PeftClassifier(peft_method="poly", n_skills=3, **settings).fit(X, y)
    ours = PolyClassifier(n_skills=3, **settings).fit(X, y)
    assert peer.n_trainable_params_ == ours.n_trainable_params_
    assert np.isfinite(peer.loss_curve_).all()
    # peft's router logits train at the router learning rate, as ours do.
    optimizer, _ = peer._training_loop(np.random.default_rng(0)).make_optimizer(10)
    router_group = [group for group in optimizer.param_groups if group["initial_lr"] == peer.router_learning_rate]
    assert router_group and all(p.ndim == 2 for p in router_group[0]["params"])
    proba = peer.predict_proba(X[:8])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)


def test_peft_lora_peer_matches_shared_lora_size(bert_path, multitask):
    X, y = multitask
    peer = PeftClassifier(peft_method="lora", backbone=bert_path, max_epochs=1, rank=4, max_length=32, random_state=0).fit(X, y)
    ours = quality.LoRAClassifier(backbone=bert_path, max_epochs=1, rank=4, max_length=32, random_state=0).fit(X, y)
    assert peer.n_trainable_params_ == ours.n_trainable_params_


@pytest.mark.slow
def test_task_free_benchmark_measures_every_mode_and_reports(bert_path):
    from conftest import make_multitask

    task_free = pytest.importorskip("task_free")
    X, y = make_multitask(n_per_task=24, own_words=True)
    frame = pd.DataFrame({"text": [text for text, _ in X], "task": [task for _, task in X], "label": y})
    splits = {"fit": frame.iloc[:54].reset_index(drop=True), "test": frame.iloc[54:].reset_index(drop=True)}
    record = task_free.run_one(
        "C-Poly", 0, splits, quality.PROFILES["quick"], arrow=True, backbone=bert_path, max_epochs=1, rank=4,
        max_length=32,
    )
    for mode in ("oracle",) + task_free.MODES + tuple(f"peft_arrow_top{k}" for k in task_free.ARROW_TOP_K):
        assert 0.0 <= record[f"accuracy_{mode}"] <= 1.0
    assert record["identifier_accuracy"] > 0.9  # each task's texts have words of their own
    assert set(record["identifier_per_task"]) == {"alpha", "beta", "gamma"}
    assert record["identifier_fit_s"] > 0 and record["n_test"] == 18
    text = task_free.report([record, {**record, "seed": 1}], "title")
    assert "| C-Poly | 2 |" in text and "identifier fit" in text


@pytest.mark.slow
def test_instruction_benchmark_runs_every_part_resumes_and_reports(tmp_path):
    """benchmarks/instructions.py on its smoke profile (a tiny random decoder): records, resume, report."""
    instructions = pytest.importorskip("instructions")
    profile = instructions.PROFILES["smoke"]
    multitask, held_out = instructions.benchmark_tasks(profile)
    assert len(multitask) == profile.n_tasks and len(held_out) == profile.n_transfer and not set(multitask) & set(held_out)
    data = instructions.task_rows(multitask, profile, definitions=True)
    assert (data["train"].groupby("task").size() == profile.train_per_task - profile.validation_per_task).all()
    assert (data["validation"].groupby("task").size() == profile.validation_per_task).all()
    assert not set(data["train"].index) & set(data["validation"].index)
    assert data["train"]["text"].str.startswith("Definition: ").all()
    assert instructions.main(["--profile", "smoke", "--output", str(tmp_path)]) == 0
    records = instructions.Records(tmp_path / "records.jsonl")
    parts = {row["part"] for row in records.rows}
    assert parts == {"multitask", "transfer", "cost"}
    assert {row["method"] for row in records.rows if row["part"] == "multitask"} == {m for m, _ in instructions.MULTITASK_RUNS}
    row = records.find(part="multitask", method="C-Poly", definitions=False, seed=0)
    assert set(row["test"]["generate"]["per_task"]) == set(multitask) and 0 <= row["test"]["generate"]["rougeL"] <= 1
    n_rows = len(records.rows)
    instructions.main(["--profile", "smoke", "--output", str(tmp_path)])  # everything is found: nothing reruns
    assert len(instructions.Records(tmp_path / "records.jsonl").rows) == n_rows
    report = (tmp_path / "report.md").read_text()
    for heading in ("## Targets", "## Multi-task", "## Transfer", "## Cost", "## Per task"):
        assert heading in report
    assert "| C-Poly | routing |" in report and "| LoRA from scratch | fit |" in report


def test_learning_rate_search_extends_the_grid_where_the_best_rate_is_at_an_end():
    report = pytest.importorskip("instruction_report")
    search, grid = report.learning_rate_search, (1e-3, 3e-3)
    assert search({}, grid) == (None, 1e-3)
    assert search({1e-3: 0.3, 3e-3: 0.4}, grid) == (None, 0.009)  # best at the top: try 3x beyond
    assert search({1e-3: 0.3, 3e-3: 0.4, 0.009: 0.35}, grid) == (3e-3, None)
    assert search({1e-3: 0.3, 3e-3: 0.4, 0.009: 0.45}, grid) == (0.009, None)  # one step beyond, no more
    assert search({1e-3: 0.5, 3e-3: 0.4}, grid) == (None, 0.000333)
    assert search({1e-3: 0.5, 3e-3: 0.4, 0.000333: 0.2}, grid) == (1e-3, None)
    assert search({2e-3: 0.1}, (2e-3,)) == (2e-3, None)
