"""The classifiers end to end on a tiny offline BERT."""

import io
import pickle

import joblib
import numpy as np
import pandas as pd
import pytest
import torch

from conftest import make_multitask
from skillfit import CPolyClassifier, LoRAClassifier, MTLoRAClassifier, PEMTClassifier, PolyClassifier
from skillfit.skills import skill_layers

ESTIMATORS = [
    pytest.param(lambda **kw: LoRAClassifier(sharing="shared", **kw), id="lora-shared"),
    pytest.param(lambda **kw: LoRAClassifier(sharing="private", **kw), id="lora-private"),
    pytest.param(lambda **kw: PolyClassifier(n_skills=4, **kw), id="poly"),
    pytest.param(lambda **kw: PolyClassifier(n_skills=4, n_splits=2, **kw), id="poly-s"),
    pytest.param(lambda **kw: CPolyClassifier(n_shared=2, n_exclusive=1, **kw), id="cpoly"),
    pytest.param(lambda **kw: CPolyClassifier(n_shared=2, n_exclusive=2, combine="output", **kw), id="cpoly-output"),
    pytest.param(lambda **kw: MTLoRAClassifier(n_task_layers=1, **kw), id="mtlora"),
    pytest.param(lambda **kw: PEMTClassifier(**kw), id="pemt"),
]


def _accuracy_per_task(clf, X, y):
    predictions = clf.predict(X)
    tasks = np.asarray([task for _, task in X], dtype=object)
    return {task: float(np.mean(predictions[tasks == task] == y[tasks == task])) for task in np.unique(tasks)}


@pytest.mark.slow
@pytest.mark.parametrize("make", ESTIMATORS)
def test_every_estimator_learns_tasks_that_need_different_features(make, bert_path):
    X, y = make_multitask(n_per_task=120, seed=0)
    X_test, y_test = make_multitask(n_per_task=60, seed=1)
    clf = make(backbone=bert_path, max_epochs=8, batch_size=16, learning_rate=1e-2, random_state=0, rank=4)
    clf.fit(X, y)
    accuracy = _accuracy_per_task(clf, X_test, y_test)
    # Chance is 0.5 on each task; every task must be learned.
    assert min(accuracy.values()) >= 0.9, accuracy
    assert clf.n_iter_ == len(clf.loss_curve_) in (8, 16)  # PEMT runs two stages
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]


@pytest.mark.slow
def test_poly_learns_non_uniform_routing(bert_path, multitask):
    X, y = multitask
    clf = PolyClassifier(n_skills=4, backbone=bert_path, max_epochs=6, batch_size=16, router_learning_rate=0.1, random_state=0)
    clf.fit(X, y)
    weights = clf.routing_weights_
    assert weights.shape == (3, 4 * 4)  # 4 routed layers x 4 skills, side by side
    np.testing.assert_allclose(weights.reshape(3, 4, 4).sum(axis=-1), 1.0, rtol=1e-5)
    # Initialised uniform (0.25 +- 1e-4); training must move it well away.
    assert np.abs(weights - 0.25).max() > 0.05, weights
    assert len(clf.layer_routing_weights_) == 4
    assert all(w.shape == (3, 1, 4) for w in clf.layer_routing_weights_.values())


@pytest.mark.slow
def test_fitted_attributes(tiny_kwargs, multitask):
    X, y = multitask
    clf = CPolyClassifier(n_shared=2, n_exclusive=1, n_splits=2, **tiny_kwargs).fit(X, y)
    assert clf.classes_.tolist() == sorted(set(y))
    assert clf.tasks_.tolist() == ["alpha", "beta", "gamma"]
    assert clf.routing_weights_.shape == (3, len(clf.layer_routing_weights_) * 2 * 2)  # layers x heads x skills
    assert clf.device_ == torch.device("cpu")
    assert clf.n_iter_ == 2 and all(isinstance(loss, float) for loss in clf.loss_curve_)


@pytest.mark.slow
def test_backbone_frozen_and_parameter_count(tiny_kwargs, multitask, bert_path):
    from transformers import AutoModel

    X, y = multitask
    clf = CPolyClassifier(n_shared=3, n_exclusive=2, n_splits=2, **tiny_kwargs)
    clf.fit(X, y)
    reference = AutoModel.from_pretrained(bert_path).state_dict()
    backbone_state = {
        name.replace(".base_layer", ""): tensor
        for name, tensor in clf.network_.backbone.state_dict().items()
        if not any(part in name for part in ("shared_", "exclusive_", "routing_logits", "route_prototypes"))
    }
    assert backbone_state.keys() == reference.keys()
    for name, tensor in reference.items():
        assert torch.equal(backbone_state[name], tensor), f"backbone weight {name} changed"
    trainable = {name for name, p in clf.network_.named_parameters() if p.requires_grad}
    assert all(
        name.startswith("head.") or name.rsplit(".", 1)[-1] in {"shared_A", "shared_B", "exclusive_A", "exclusive_B", "routing_logits", "exclusive_logits"}
        for name in trainable
    )
    # Hand count: 4 adapted 32x32 layers (query, value in 2 blocks), T=3 tasks, K=3, E=2, H=2, r=4.
    T, K, E, H, r, d = 3, 3, 2, 2, 4, 32
    per_layer = K * (d * r + r * d) + T * H * K + T * E * (d * r + r * d) + T * H * E
    head = d * 6 + 6
    assert clf.n_trainable_params_ == 4 * per_layer + head


@pytest.mark.slow
def test_input_forms_give_identical_predictions(tiny_kwargs, multitask):
    X, y = multitask
    clf = PolyClassifier(n_skills=2, **tiny_kwargs).fit(X, y)
    frame = pd.DataFrame({"sentence": [t for t, _ in X], "domain": [k for _, k in X]})
    array = np.asarray(X, dtype=object)
    from_tuples = clf.predict_proba(X)
    from_frame = clf.set_params(text_column="sentence", task_column="domain").predict_proba(frame)
    from_array = clf.predict_proba(array)
    np.testing.assert_array_equal(from_tuples, from_frame)
    np.testing.assert_array_equal(from_tuples, from_array)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[np.argmax(from_tuples, axis=1)])


def test_integer_and_string_task_ids_keep_their_type(tiny_kwargs):
    X, y = make_multitask(n_per_task=20, task_ids=(10, 3, 7))
    clf = LoRAClassifier(**tiny_kwargs).fit(X, y)
    assert clf.tasks_.dtype.kind == "i" and clf.tasks_.tolist() == [3, 7, 10]
    X_str, y_str = make_multitask(n_per_task=20, task_ids=("b", "a"))
    clf_str = LoRAClassifier(**tiny_kwargs).fit(X_str, y_str)
    assert clf_str.tasks_.tolist() == ["a", "b"] and all(isinstance(t, str) for t in clf_str.tasks_)
    np.testing.assert_array_equal(clf.predict(X[:5]), clf.predict([(t, np.int64(k)) for t, k in X[:5]]))


def test_probabilities_are_zero_outside_a_tasks_labels(tiny_kwargs, multitask):
    X, y = multitask
    clf = CPolyClassifier(**tiny_kwargs).fit(X, y)
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    for row, (_, task) in enumerate(X):
        allowed = [label.startswith(task + ":") for label in clf.classes_]
        assert np.all(proba[row, ~np.asarray(allowed)] == 0.0)
        assert np.all(proba[row, np.asarray(allowed)] > 0.0)


@pytest.mark.slow
@pytest.mark.parametrize("dump", ["pickle", "joblib"])
def test_pickle_and_joblib_round_trips(tiny_kwargs, multitask, dump):
    X, y = multitask
    clf = CPolyClassifier(n_shared=2, n_exclusive=1, **tiny_kwargs).fit(X, y)
    if dump == "pickle":
        restored = pickle.loads(pickle.dumps(clf))
    else:
        buffer = io.BytesIO()
        joblib.dump(clf, buffer)
        buffer.seek(0)
        restored = joblib.load(buffer)
    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))
    np.testing.assert_array_equal(restored.routing_weights_, clf.routing_weights_)


def test_cuda_fitted_estimator_unpickles_on_a_cpu_only_machine(tiny_kwargs, multitask, monkeypatch):
    X, y = multitask
    clf = LoRAClassifier(**tiny_kwargs).fit(X, y)
    expected = clf.predict_proba(X)
    clf.device_ = torch.device("cuda")  # as left by a fit on a GPU machine
    payload = pickle.dumps(clf)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match="CUDA is not available here; it will predict on the CPU"):
        restored = pickle.loads(payload)
    assert restored.device_ == torch.device("cpu")
    np.testing.assert_array_equal(restored.predict_proba(X), expected)


@pytest.mark.slow
def test_same_random_state_repeats_and_leaves_global_rng_alone(tiny_kwargs, multitask):
    X, y = multitask
    torch.manual_seed(123)
    np.random.seed(123)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    first = PolyClassifier(n_skills=3, dropout=0.1, **tiny_kwargs).fit(X, y).predict_proba(X)
    second = PolyClassifier(n_skills=3, dropout=0.1, **tiny_kwargs).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(first, second)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert not torch.are_deterministic_algorithms_enabled(), "fit must restore the caller's deterministic mode"
    after = np.random.get_state()
    assert after[0] == numpy_state[0] and np.array_equal(after[1], numpy_state[1]) and after[2:] == numpy_state[2:]
    other = PolyClassifier(n_skills=3, dropout=0.1, **{**tiny_kwargs, "random_state": 1}).fit(X, y).predict_proba(X)
    assert not np.array_equal(first, other)
    # random_state=None draws fresh entropy and still leaves the global state alone.
    PolyClassifier(n_skills=3, **{**tiny_kwargs, "random_state": None, "max_epochs": 1}).fit(X, y)
    assert torch.equal(torch.get_rng_state(), torch_state)


@pytest.mark.slow
def test_degenerate_estimators_agree_exactly(tiny_kwargs, multitask):
    X, y = multitask
    np.testing.assert_array_equal(
        CPolyClassifier(n_shared=3, n_exclusive=0, **tiny_kwargs).fit(X, y).predict_proba(X),
        PolyClassifier(n_skills=3, **tiny_kwargs).fit(X, y).predict_proba(X),
    )
    np.testing.assert_array_equal(
        CPolyClassifier(n_shared=0, n_exclusive=1, **tiny_kwargs).fit(X, y).predict_proba(X),
        LoRAClassifier(sharing="private", **tiny_kwargs).fit(X, y).predict_proba(X),
    )


@pytest.mark.slow
def test_verbosity(tiny_kwargs, multitask, capfd):
    X, y = multitask
    LoRAClassifier(**{**tiny_kwargs, "verbose": 0}).fit(X, y).predict(X)
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""
    LoRAClassifier(**{**tiny_kwargs, "verbose": 1, "max_epochs": 3}).fit(X, y)
    lines = [line for line in capfd.readouterr().out.splitlines() if "epoch" in line]
    assert len(lines) == 3 and lines[0].startswith("[LoRAClassifier] epoch 1/3")
    LoRAClassifier(**{**tiny_kwargs, "verbose": 2, "max_epochs": 1}).fit(X, y)
    assert "epoch 1/1" in capfd.readouterr().err


@pytest.mark.slow
def test_adapted_layers_follow_target_modules(tiny_kwargs, multitask):
    X, y = multitask
    clf = LoRAClassifier(**{**tiny_kwargs, "target_modules": "all-linear", "max_epochs": 1}).fit(X, y)
    names = [name for name, _ in skill_layers(clf.network_)]
    assert len(names) == 2 * 6 + 1  # q, k, v, attention output, intermediate, output per block; pooler
    clf = LoRAClassifier(**{**tiny_kwargs, "target_modules": ["key"], "max_epochs": 1}).fit(X, y)
    assert [name.rsplit(".", 1)[-1] for name, _ in skill_layers(clf.network_)] == ["key", "key"]


@pytest.mark.parametrize(
    "kind, pooling, adapted",
    [
        ("distilbert", "mean", ["q_lin", "v_lin"]),
        ("roberta", "mean", ["query", "value"]),
        ("t5", "mean", ["q", "v"]),
        ("bart", "mean", ["q_proj", "v_proj"]),
        ("gpt2", "last", ["c_attn"]),
        ("llama", "last", ["q_proj", "v_proj"]),
    ],
)
def test_architectures_get_default_targets_and_pooling(kind, pooling, adapted, multitask):
    from _tiny import tiny_backbone

    X, y = multitask
    clf = PolyClassifier(n_skills=2, backbone=tiny_backbone(kind), max_epochs=1, batch_size=16, random_state=0).fit(X, y)
    assert clf.pooling_ == pooling
    names = [name.rsplit(".", 1)[-1] for name, _ in skill_layers(clf.network_)]
    assert sorted(set(names)) == sorted(adapted) and len(names) == 2 * len(adapted)
    proba = clf.predict_proba(X[:4])
    assert proba.shape == (4, 6) and np.allclose(proba.sum(axis=1), 1.0)


@pytest.mark.slow
def test_predictions_do_not_depend_on_batch_composition(tiny_kwargs, multitask):
    X, y = multitask
    clf = CPolyClassifier(**{**tiny_kwargs, "batch_size": 7}).fit(X, y)
    full = clf.predict_proba(X)
    order = np.random.default_rng(0).permutation(len(X))
    np.testing.assert_allclose(clf.predict_proba([X[i] for i in order]), full[order], rtol=0, atol=1e-6)
    np.testing.assert_allclose(clf.predict_proba(X[5:9]), full[5:9], rtol=0, atol=1e-6)
    np.testing.assert_allclose(clf.predict_proba([X[3]]), full[3:4], rtol=0, atol=1e-6)
