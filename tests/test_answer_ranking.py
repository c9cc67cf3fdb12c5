"""Rank classification (``answer_choices``), decoder-only training on left-padded rows, predict's progress."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from _tiny import tiny_backbone
from skillfit import CPolySeq2Seq, LoRASeq2Seq, PEMTSeq2Seq
from skillfit.estimators._answer_ranking import MAX_KNOWN_ANSWERS, closed_answer_sets
from skillfit._validation import InvalidParameterError

# Answers are words of the tiny tokenizer's vocabulary, so that each tokenizes differently.
X = [("w1 apple w2", "fruit"), ("w3 banana", "fruit"), ("cherry w4 w5", "fruit"), ("w6 apple", "fruit"),
     ("w7 delta w8", "greek"), ("echo w9", "greek"), ("w10 w11 delta", "greek"), ("echo", "greek"),
     ("w12 fox", "open"), ("golf w13", "open")]
y = ["hotel", "golf", "golf", "hotel", "w20", "w21 w22", "w20", "w21 w22", "w12 fox w12", "golf"]
SETTINGS = dict(max_epochs=3, batch_size=4, random_state=0, rank=2, max_new_tokens=3, learning_rate=1e-2)
ESTIMATORS = {
    "cpoly": lambda kind: CPolySeq2Seq(n_shared=2, n_exclusive=1, backbone=tiny_backbone(kind), **SETTINGS),
    "pemt": lambda kind: PEMTSeq2Seq(backbone=tiny_backbone(kind), **SETTINGS,
                                     task_descriptions={"fruit": "fruit", "greek": "letters", "open": "copy"}),
}


def _mean_log_likelihood(estimator, text: str, task: str, answer: str) -> float:
    """Scored as the training loss scores one unpadded row: minus the mean cross-entropy of its answer tokens."""
    encoded = estimator._encode([text], estimator._task_indices(np.asarray([task], dtype=object)), [answer])
    batch = estimator._make_batch(np.array([0]), encoded)
    estimator.network_.eval()
    with torch.no_grad():
        return -float(estimator.network_(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["tasks"]))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gpt2", "llama", "t5", "bart"])
@pytest.mark.parametrize("method", sorted(ESTIMATORS))
def test_ranked_answer_is_the_most_likely_known_answer(method, kind):
    est = ESTIMATORS[method](kind).fit(X, y)
    assert est.known_answers_ == {"fruit": ["golf", "hotel"], "greek": ["w20", "w21 w22"]}  # "open" has no closed set
    generated = est.predict(X)
    ranked = est.set_params(answer_choices="auto").predict(X)
    for (text, task), answer, free in zip(X, ranked, generated):
        if task == "open":
            assert answer == free  # no known answers: generated as before
            continue
        scores = {choice: _mean_log_likelihood(est, text, task, choice) for choice in est.known_answers_[task]}
        assert abs(np.diff(list(scores.values()))).min() > 1e-4, scores  # no near-tie: the check means something
        assert answer == max(scores, key=scores.get), scores
    # Rows ranked in other batches (one at a time) get the same answers.
    alone = [est.predict([row])[0] for row in X[:8]]
    assert alone == ranked[:8].tolist()


@pytest.mark.slow
def test_choices_given_as_a_dict_rank_only_those_tasks_and_are_checked():
    est = LoRASeq2Seq(sharing="private", backbone=tiny_backbone("llama"), **SETTINGS).fit(X, y)
    generated = est.predict(X)
    ranked = est.set_params(answer_choices={"open": ["golf", "fox w12"]}).predict(X)
    assert set(ranked[8:]) <= {"golf", "fox w12"}
    assert ranked[:8].tolist() == generated[:8].tolist()
    with pytest.raises(ValueError, match=r"names task\(s\) \['nope'\] that LoRASeq2Seq was not fitted on"):
        est.set_params(answer_choices={"nope": ["a"]}).predict(X)
    for bad in ({"fruit": []}, {"fruit": ["yes", "yes"]}, {"fruit": [""]}, {"fruit": "yes"}, "rank", {}):
        with pytest.raises(InvalidParameterError, match="'answer_choices' parameter of LoRASeq2Seq must be None"):
            LoRASeq2Seq(answer_choices=bad, backbone=tiny_backbone("llama"), **SETTINGS).fit(X, y)


def test_known_answers_survive_saving_and_pickling_and_grow_with_adapt(tmp_path):
    est = CPolySeq2Seq(n_shared=2, backbone=tiny_backbone("llama"), answer_choices="auto", **SETTINGS).fit(X, y)
    expected = est.predict(X)
    est.save_pretrained(tmp_path / "model")
    loaded = CPolySeq2Seq.from_pretrained(tmp_path / "model")
    assert loaded.known_answers_ == est.known_answers_ and loaded.answer_choices == "auto"
    assert loaded.predict(X).tolist() == expected.tolist()
    assert pickle.loads(pickle.dumps(est)).predict(X).tolist() == expected.tolist()
    est.adapt([("w1 apple", "new"), ("w2 cherry", "new"), ("banana", "new"), ("w3", "new")], ["w30", "w31", "w30", "w31"])
    assert est.known_answers_["new"] == ["w30", "w31"] and set(est.known_answers_) == {"fruit", "greek", "new"}
    assert set(est.predict([("w1 apple", "new")])) <= {"w30", "w31"}


def test_a_model_without_known_answers_explains_auto():
    est = CPolySeq2Seq(n_shared=2, backbone=tiny_backbone("llama"), **SETTINGS).fit(X, y)
    del est.known_answers_  # as a model saved before answer ranking existed
    with pytest.raises(ValueError, match="pass answer_choices as a dict"):
        est.set_params(answer_choices="auto").predict(X)


def test_closed_answer_sets_rule():
    tasks = np.array(["few", "many", "small"], dtype=object)
    targets = ["a", "b", "a", "b"] + [str(i) for i in range(40)] + ["x", "y"]
    index = np.array([0] * 4 + [1] * 40 + [2] * 2)
    assert closed_answer_sets(targets, index, tasks) == {"few": ["a", "b"]}  # 2 distinct of 4; 40 of 40 and 2 of 2 are open
    wide = [str(i % (MAX_KNOWN_ANSWERS + 1)) for i in range(200)]
    assert closed_answer_sets(wide, np.zeros(200, dtype=int), tasks[:1]) == {}  # more answers than the cap


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_decoder_only_loss_equals_the_mean_over_rows_read_without_padding(kind):
    """Left-padded rows with their own positions give the loss of each row read alone."""
    est = LoRASeq2Seq(backbone=tiny_backbone(kind), **SETTINGS).fit(X, y)
    rows = np.arange(len(X))
    encoded = est._encode([t for t, _ in X], est._task_indices(np.asarray([t for _, t in X], dtype=object)), y)
    batch = est._make_batch(rows, encoded)
    assert (batch["attention_mask"][:, -1] == 1).all()  # left-padded: every row ends at the last position
    est.network_.eval()
    with torch.no_grad():
        loss = est.network_(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["tasks"])
        total, count = 0.0, 0
        for row in rows:
            ids = torch.tensor([encoded["input_ids"][row]])
            labels = torch.tensor([encoded["labels"][row]])
            with est.network_.context.tasks(torch.tensor([encoded["tasks"][row]])):
                logits = est.network_.backbone(input_ids=ids).logits
            ce = torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:], ignore_index=-100, reduction="sum")
            total, count = total + float(ce), count + int((labels[0, 1:] != -100).sum())
    assert float(loss) == pytest.approx(total / count, rel=1e-5)


def test_predict_reports_progress(capsys, monkeypatch):
    est = LoRASeq2Seq(backbone=tiny_backbone("llama"), **SETTINGS).fit(X, y)
    est.set_params(verbose=1).predict(X)
    captured = capsys.readouterr()
    assert "LoRASeq2Seq.predict: 10 rows in" in captured.out
    assert "10/10" not in captured.err  # a short run: no bar at verbose=1
    monkeypatch.setattr("skillfit.estimators._runtime.PROGRESS_DELAY", 0.0)  # every run counts as long
    est.predict(X)
    assert "10/10" in capsys.readouterr().err
    monkeypatch.undo()
    est.set_params(verbose=2, answer_choices="auto").predict(X)
    captured = capsys.readouterr()
    assert "10/10" in captured.err  # the progress bar reached every row, ranked and generated
    assert "LoRASeq2Seq.predict: 10 rows in" in captured.out
