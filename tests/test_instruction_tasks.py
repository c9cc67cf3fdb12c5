"""The bundled Super-NaturalInstructions tasks, their build script, and SuperNI's metrics."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skillfit.datasets import load_instruction_tasks
from skillfit.metrics import exact_match_score, normalize_answer, rouge_l, rouge_l_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import build_instruction_tasks as build  # noqa: E402

# Super-NaturalInstructions' test tasks: splits/default/test_tasks.txt of two versions of
# allenai/natural-instructions (119 tasks, and a later list of 33), merged.
SNI_TEST_TASKS = set((Path(__file__).parent / "data" / "sni_test_tasks.txt").read_text().split())


@pytest.fixture(scope="module")
def everything():
    return load_instruction_tasks(split="all")


def test_sixty_or_more_training_split_tasks_of_five_kinds(everything):
    assert len(everything.task_names) >= 60
    assert not set(everything.task_names) & SNI_TEST_TASKS
    assert set(everything.task_names) == set(build.TASKS)
    assert set(everything.kinds.values()) == set(build.KINDS)
    assert min(pd.Series(everything.kinds).value_counts()) >= 5


def test_each_task_has_64_train_and_32_test_rows_in_file_order(everything):
    counts = everything.frame.groupby(["task", "split"]).size().unstack()
    assert (counts["train"] == 64).all() and (counts["test"] == 32).all()
    # Rows come task by task, train before test, as in the files.
    first_test = everything.frame.groupby("task")["split"].apply(lambda s: list(s).index("test"))
    assert (first_test == 64).all()
    capitals = everything.frame[everything.frame["task"] == "task1146_country_capital"]
    assert capitals["text"].iloc[:3].tolist() == ["Afghanistan", "Albania", "Algeria"]  # the file's first instances


def test_targets_are_first_references_and_definitions_are_complete(everything):
    references = everything.references
    assert len(references) == len(everything.target)
    assert all(isinstance(refs, list) and refs and all(isinstance(r, str) for r in refs) for refs in references)
    assert [refs[0] for refs in references] == everything.target.tolist()
    assert any(len(refs) > 1 for refs in references)  # some instances have several references
    assert set(everything.definitions) == set(everything.task_names)
    assert all(len(text) > 20 for text in everything.definitions.values())
    assert all(isinstance(c, list) for c in everything.categories.values())
    assert sum(bool(c) for c in everything.categories.values()) >= len(everything.task_names) - 2  # two files name none


def test_splits_forms_and_instructions():
    X, y = load_instruction_tasks(split="test", return_X_y=True)
    assert list(X.columns) == ["text", "task"] and len(X) == len(y) == 32 * X["task"].nunique()
    X_np, y_np = load_instruction_tasks(split="train", return_X_y=True, as_frame=False)
    assert X_np.shape == (64 * X["task"].nunique(), 2) and X_np.dtype == object and y_np.dtype == object
    bare = load_instruction_tasks(split="test")
    posed = load_instruction_tasks(split="test", instructions=True)
    for text, prompt, task in zip(bare.data["text"], posed.data["text"], bare.data["task"]):
        assert prompt == f"Definition: {bare.definitions[task]}\n\nNow complete the following example -\nInput: {text}\nOutput:"
    assert posed.target.tolist() == bare.target.tolist()
    with pytest.raises(ValueError, match="split must be one of"):
        load_instruction_tasks(split="validation")


def _write_task(folder: Path, task: str, n: int, definition) -> None:
    instances = [{"id": f"{task}-{i}", "input": f"input {i} of {task}", "output": [f"out {i}", f"alt {i}"]} for i in range(n)]
    content = {"Contributors": ["x"], "Categories": ["Answer Generation", "Fact Based"], "Definition": definition,
               "Instances": instances}
    (folder / "tasks").mkdir(parents=True, exist_ok=True)
    (folder / "tasks" / f"{task}.json").write_text(json.dumps(content))


def test_build_script_takes_the_first_instances_and_is_byte_reproducible(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "TASKS", {"task001_a": build.CLASSIFICATION, "task002_b": build.GENERATION})
    _write_task(tmp_path / "repo", "task001_a", 120, "Say it.")
    _write_task(tmp_path / "repo", "task002_b", 96, ["Write it", "well."])  # newer files: a list
    data, info = build.build(tmp_path / "repo", tmp_path / "out")
    assert data.groupby(["task", "split"]).size().to_dict() == {
        ("task001_a", "test"): 32, ("task001_a", "train"): 64, ("task002_b", "test"): 32, ("task002_b", "train"): 64}
    first = data[data["task"] == "task001_a"]
    assert first["text"].tolist() == [f"input {i} of task001_a" for i in range(96)]  # file order, no sampling
    assert json.loads(first["references"].iloc[0]) == ["out 0", "alt 0"] and first["target"].iloc[0] == "out 0"
    assert info.set_index("task")["definition"].to_dict() == {"task001_a": "Say it.", "task002_b": "Write it well."}
    assert info["categories"].tolist() == ["Answer Generation; Fact Based"] * 2
    written = (tmp_path / "out" / build.DATA_FILE).read_bytes()
    build.build(tmp_path / "repo", tmp_path / "again")
    assert (tmp_path / "again" / build.DATA_FILE).read_bytes() == written
    assert gzip.decompress(written).decode().startswith("text,task,target,references,split\n")


def test_build_script_refuses_test_tasks_short_files_and_a_wrong_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "TASKS", {"task001_a": build.CLASSIFICATION})
    _write_task(tmp_path / "repo", "task001_a", 50, "Say it.")
    with pytest.raises(ValueError, match="50 instances; the dataset takes the first 96"):
        build.build(tmp_path / "repo", tmp_path / "out")
    (tmp_path / "repo" / "splits" / "default").mkdir(parents=True)
    (tmp_path / "repo" / "splits" / "default" / "test_tasks.txt").write_text("task001_a\n")
    with pytest.raises(ValueError, match="test split must not be bundled"):
        build.build(tmp_path / "repo", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="natural-instructions checkout"):
        build.build(tmp_path / "nothing", tmp_path / "out")


def test_bundled_files_are_what_the_build_script_writes():
    """The committed CSVs have the script's columns and tasks (a rebuild needs the checkout)."""
    data = pd.read_csv(ROOT / "skillfit" / "datasets" / "data" / build.DATA_FILE, dtype=str, keep_default_na=False)
    info = pd.read_csv(ROOT / "skillfit" / "datasets" / "data" / build.INFO_FILE, dtype=str, keep_default_na=False)
    assert list(data["task"].unique()) == list(build.TASKS)
    assert info.set_index("task")["kind"].to_dict() == build.TASKS


@pytest.mark.slow
def test_supernaturalinstructions_metrics_against_rouge_score():
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rng = np.random.default_rng(0)
    words = "the cats running runs ran happily nations national is are being dogs cat generalization".split()
    for _ in range(300):
        prediction = " ".join(rng.choice(words, rng.integers(1, 8)))
        references = [" ".join(rng.choice(words, rng.integers(1, 8))) for _ in range(rng.integers(1, 4))]
        expected = max(scorer.score(reference, prediction)["rougeL"].fmeasure for reference in references)
        assert rouge_l(prediction, references, stem=True) == pytest.approx(expected, abs=1e-12)


def test_best_reference_and_normalised_exact_match():
    assert rouge_l_score([["no", "the cat"], "spam"], ["the cat", "spam"]) == 1.0
    assert exact_match_score([["A cat.", "dog"]], ["a cat"]) == 0.0
    assert exact_match_score([["A cat.", "dog"]], ["a cat"], normalize=True) == 1.0
    assert normalize_answer("An  apple, the PEAR!") == "apple pear"
    with pytest.raises(ValueError, match=r"y_true\[1\] is an empty list of references"):
        rouge_l_score(["a", []], ["a", "b"])
    with pytest.raises(TypeError, match="a reference may also be a list of str"):
        exact_match_score([["a", 3]], ["a"])
