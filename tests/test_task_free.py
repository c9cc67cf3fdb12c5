"""Predicting without task ids: the task identifier, content routing, fallbacks, round trips."""

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

import skillfit
from _tiny import tiny_backbone
from conftest import make_multitask
from skillfit import CPolyClassifier, LoRAClassifier, MTLoRAClassifier, PEMTClassifier, PolyClassifier
from skillfit.estimators._task_free.task_identifier import TaskIdentifier
from skillfit.skills import SkillConfig, SkillLinear, TaskContext
from skillfit.skills.content_routing import ContentRouting, skill_prototypes

FIXTURES = Path(__file__).parent / "fixtures"


def worded_tasks(n_per_task=40, seed=0, task_ids=("alpha", "beta", "gamma")):
    """Keyword tasks whose texts also tell the task (each draws filler words of its own)."""
    return make_multitask(n_per_task, seed, task_ids, own_words=True)


@pytest.fixture(scope="module")
def worded():
    return worded_tasks()


@pytest.fixture(scope="module")
def inferring_cpoly(bert_path, worded):
    X, y = worded
    settings = dict(backbone=bert_path, max_epochs=3, batch_size=16, random_state=0, rank=4, max_length=32)
    return CPolyClassifier(n_shared=3, n_exclusive=1, handle_unknown_task="infer", **settings).fit(X, y)


def texts_of(X):
    return [text for text, _ in X]


# ------------------------------------------------------------------ the identifier
def test_identifier_is_a_shrunk_linear_discriminant_as_sklearn_computes_it():
    rng = np.random.default_rng(0)
    tasks = np.repeat(np.arange(3), 50)  # balanced: equal priors are sklearn's empirical ones
    features = rng.normal(size=(150, 6)) + tasks[:, None] * 0.7
    identifier = TaskIdentifier.fitted(features, tasks, 3)
    shrinkage = float(identifier.shrinkage)
    assert 0.0 < shrinkage < 1.0
    reference = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=shrinkage).fit(features, tasks)
    np.testing.assert_allclose(identifier.predict_proba(features), reference.predict_proba(features), atol=1e-5)


def test_identifier_updates_merge_exactly_and_add_tasks():
    rng = np.random.default_rng(1)
    tasks = rng.integers(0, 3, 200)
    features = rng.normal(size=(200, 5)) + tasks[:, None]
    whole = TaskIdentifier.fitted(features, tasks, 3)
    parts = TaskIdentifier.fitted(features[:120], tasks[:120], 3)
    parts.update(features[120:], tasks[120:])
    for name in ("means", "counts", "covariance"):
        torch.testing.assert_close(getattr(parts, name), getattr(whole, name), rtol=1e-5, atol=1e-5)
    new = rng.normal(size=(6, 5)) + 8.0
    parts.update(new, np.full(6, 3))
    assert parts.n_tasks == 4 and (parts.predict_proba(new).argmax(axis=1) == 3).all()


def test_a_task_without_rows_is_never_inferred():
    features = np.random.default_rng(2).normal(size=(40, 4))
    identifier = TaskIdentifier.fitted(features, np.repeat([0, 2], 20), 3)
    probabilities = identifier.predict_proba(features)
    assert (probabilities[:, 1] == 0).all() and np.allclose(probabilities.sum(axis=1), 1)


# ------------------------------------------------------------------ task inference
def test_inference_returns_fitted_task_ids(inferring_cpoly, worded):
    X, _ = worded
    clf = inferring_cpoly
    texts = texts_of(X)
    probabilities = clf.predict_task_proba(texts)
    assert probabilities.shape == (len(X), 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    inferred = clf.predict_task(texts)
    assert set(inferred.tolist()) <= set(clf.tasks_.tolist())
    true = np.asarray([task for _, task in X], dtype=object)
    assert (inferred == true).mean() > 0.95  # each task's texts have words of their own
    # Task ids in X are ignored by predict_task: it infers from the text alone.
    np.testing.assert_array_equal(clf.predict_task(X), inferred)


def test_inferred_rows_use_the_inferred_task(inferring_cpoly, worded):
    X, _ = worded
    clf = inferring_cpoly
    texts = texts_of(X[:30])
    with_inferred_ids = list(zip(texts, clf.predict_task(texts)))
    np.testing.assert_allclose(clf.predict_proba(texts), clf.predict_proba(with_inferred_ids), rtol=0, atol=1e-6)
    # The inferred task's labels only: the other tasks' labels get exactly zero.
    probabilities = clf.predict_proba(texts)
    allowed = clf.network_.label_mask.cpu().numpy()[clf.tasks_.searchsorted(clf.predict_task(texts))]
    assert (probabilities[~allowed] == 0).all()
    assert clf.unknown_task_report_["inferred"] == 30 and clf.unknown_task_report_["fractions"]["inferred"] == 1.0


@pytest.mark.parametrize("form", ["list", "series", "array", "frame", "missing-ids", "unknown-ids"])
def test_text_only_inputs(inferring_cpoly, worded, form):
    X, _ = worded
    texts = texts_of(X[:12])
    frames = {
        "list": texts,
        "series": pd.Series(texts),
        "array": np.asarray(texts, dtype=object),
        "frame": pd.DataFrame({"text": texts}),
        "missing-ids": pd.DataFrame({"text": texts, "task": [None] * 6 + [np.nan] * 6}),
        "unknown-ids": [(text, "never-fitted") for text in texts],
    }
    expected = inferring_cpoly.predict_proba(texts)
    np.testing.assert_array_equal(inferring_cpoly.predict_proba(frames[form]), expected)


@pytest.mark.slow
def test_known_task_rows_are_bit_identical_to_a_model_without_the_feature(bert_path, worded):
    X, y = worded
    settings = dict(backbone=bert_path, max_epochs=2, batch_size=16, random_state=0, rank=4, max_length=32)
    plain = CPolyClassifier(n_shared=3, n_exclusive=1, **settings).fit(X, y)
    inferring = CPolyClassifier(n_shared=3, n_exclusive=1, handle_unknown_task="infer", **settings).fit(X, y)
    np.testing.assert_array_equal(inferring.predict_proba(X), plain.predict_proba(X))
    mixed = [(text, task if i % 3 else None) for i, (text, task) in enumerate(X)]
    known = np.asarray([i % 3 != 0 for i in range(len(X))])
    for mode in ("infer", "infer_and_route", "route", "average"):
        inferring.set_params(handle_unknown_task=mode)
        np.testing.assert_array_equal(
            inferring.predict_proba(mixed)[known], plain.predict_proba([X[i] for i in np.flatnonzero(known)])
        )
        report = inferring.unknown_task_report_
        assert report["given"] == known.sum() and report["rows"] == len(X)


def test_threshold_falls_back_to_average_and_says_so(inferring_cpoly, worded):
    X, _ = worded
    clf = inferring_cpoly
    texts = texts_of(X[:20])
    best = clf.predict_task_proba(texts).max(axis=1)
    threshold = float(np.median(best))
    try:
        clf.set_params(unknown_task_threshold=threshold)
        probabilities = clf.predict_proba(texts)
        report = clf.unknown_task_report_
        low = best < threshold
        assert report["fell_back"] == low.sum() > 0 and report["inferred"] == (~low).sum()
        assert report["fractions"]["fell_back"] == pytest.approx(low.mean())
        clf.set_params(handle_unknown_task="average")
        np.testing.assert_allclose(probabilities[low], clf.predict_proba(texts)[low], rtol=0, atol=1e-6)
        assert clf.unknown_task_report_["averaged"] == 20
    finally:
        clf.set_params(unknown_task_threshold=0.0, handle_unknown_task="infer")


def test_adapt_adds_new_tasks_to_the_identifier(inferring_cpoly, worded):
    clf = pickle.loads(pickle.dumps(inferring_cpoly))
    X_new, y_new = worded_tasks(n_per_task=16, seed=3, task_ids=("alpha", "beta", "gamma", "delta"))
    X_new, y_new = zip(*[(x, label) for x, label in zip(X_new, y_new) if x[1] == "delta"])
    clf.adapt(list(X_new), np.asarray(y_new, dtype=object), mode="routing", max_epochs=1)
    assert clf.network_.task_identifier.n_tasks == 4
    fresh, _ = worded_tasks(n_per_task=10, seed=4, task_ids=("alpha", "beta", "gamma", "delta"))
    inferred = clf.predict_task([text for text, task in fresh if task == "delta"])
    assert (inferred == "delta").mean() > 0.9


def test_identifier_on_demand_and_its_absence_explained(tiny_kwargs, worded):
    X, y = worded
    clf = PolyClassifier(n_skills=2, **tiny_kwargs).fit(X, y)
    with pytest.raises(ValueError, match=r"has no task identifier.*fit_task_identifier"):
        clf.predict_task(texts_of(X[:3]))
    clf.set_params(handle_unknown_task="infer")
    with pytest.raises(ValueError, match="has no task identifier"):
        clf.predict(texts_of(X[:3]))
    with pytest.raises(ValueError, match=r"task id\(s\) \['omega'\] that were not fitted"):
        clf.fit_task_identifier([("w1 w2", "omega")])
    assert clf.fit_task_identifier(X) is clf
    assert (clf.predict_task(X) == np.asarray([task for _, task in X], dtype=object)).mean() > 0.95
    with pytest.warns(UserWarning, match=r"Tasks \['gamma'\] have no rows"):
        clf.fit_task_identifier([pair for pair in X if pair[1] != "gamma"])


# ------------------------------------------------------------------ refusals
def test_error_mode_refuses_texts_alone_with_the_fix(tiny_kwargs, multitask):
    X, y = multitask
    clf = PolyClassifier(n_skills=2, **{**tiny_kwargs, "max_epochs": 1}).fit(X[:60], y[:60])
    texts = texts_of(X[:4])
    with pytest.raises(ValueError, match=r"texts without task ids.*handle_unknown_task='infer'"):
        clf.predict(texts)
    with pytest.raises(ValueError, match=r"no task column 'task'.*task_column="):
        clf.predict(pd.DataFrame({"text": texts}))
    with pytest.raises(ValueError, match=r"Task ids are missing \(None or NaN\) at rows \[1\].*'infer'"):
        clf.predict([(texts[0], "alpha"), (texts[1], None)])
    with pytest.raises(ValueError, match=r"Unknown task id\(s\) \['omega'\].*'infer'"):
        clf.predict([(texts[0], "omega")])
    with pytest.raises(ValueError, match="Reshape your data into"):  # fit always needs the task ids
        PolyClassifier(handle_unknown_task="infer", **tiny_kwargs).fit(texts, y[:4])


@pytest.mark.parametrize("make", [
    lambda **kw: LoRAClassifier(**kw), lambda **kw: MTLoRAClassifier(**kw), lambda **kw: PEMTClassifier(**kw),
    lambda **kw: CPolyClassifier(n_shared=0, n_exclusive=1, **kw),
], ids=["lora", "mtlora", "pemt", "cpoly-no-shared"])
def test_content_routing_is_refused_without_routed_skills(make, tiny_kwargs, multitask):
    X, y = multitask
    with pytest.raises(ValueError, match=r"handle_unknown_task='route' weighs shared skills routed by task"):
        make(handle_unknown_task="route", **tiny_kwargs).fit(X, y)


# ------------------------------------------------------------------ content routing
def routed_layer(combine="weight", n_exclusive=0, n_splits=1, seed=0):
    torch.manual_seed(seed)
    config = SkillConfig(n_tasks=3, n_shared=4, n_exclusive=n_exclusive, n_splits=n_splits, rank=4,
                         combine=combine, exclusive_rank=None if combine == "weight" else 3)
    layer = SkillLinear(torch.nn.Linear(16, 8), config, TaskContext()).eval()
    with torch.no_grad():
        for param in layer.parameters():
            param.normal_()
    layer.attach_prototypes()
    return layer


def test_prototypes_are_the_top_input_singular_vectors_of_each_skill():
    layer = routed_layer(n_splits=2)
    prototypes = layer.route_prototypes
    assert prototypes.shape == (2, 4, 8)
    for h in range(2):
        for k in range(4):
            update = (layer.shared_A[h, k] @ layer.shared_B[h, k]).detach().double()
            top = torch.linalg.svd(update).U[:, 0]
            assert abs(float(top @ prototypes[h, k].double())) == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(skill_prototypes(layer.shared_A, layer.shared_B), prototypes)


@pytest.mark.parametrize("top_k", [1, 2, 4, 9])
def test_content_routing_weights_sum_to_one_over_the_top_k(top_k):
    layer = routed_layer(n_splits=2)
    x = torch.randn(3, 5, 16)
    with layer.context.content_routed(ContentRouting(top_k=top_k, temperature=0.5)):
        weights = layer.content_routing_weights(x)
    assert weights.shape == (3, 5, 2, 4)
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(3, 5, 2))
    assert ((weights > 0).sum(dim=-1) <= min(top_k, 4)).all()
    # The kept skills are those whose prototypes the token's head block projects on most.
    scores = torch.einsum("nlhd,hkd->nlhk", x.reshape(3, 5, 2, 8), layer.route_prototypes).abs()
    best = scores.argmax(dim=-1, keepdim=True)
    assert (weights.gather(-1, best) > 0).all()


@pytest.mark.parametrize("combine, n_exclusive, n_splits", [
    ("weight", 0, 1), ("weight", 1, 2), ("weight", 2, 4), ("output", 1, 1), ("output", 2, 2),
])
def test_content_routing_with_uniform_weights_is_the_uniform_task_routing(combine, n_exclusive, n_splits):
    """With every skill kept and an infinite temperature, a token's mixture is uniform, as a task's with zero logits."""
    layer = routed_layer(combine, n_exclusive, n_splits)
    x = torch.randn(5, 7, 16)
    tasks = torch.tensor([0, 1, 2, -1, 0])  # exclusive skills follow each row's task; -1 has none
    context = layer.context
    with torch.no_grad(), context.tasks(tasks):
        with context.content_routed(ContentRouting(top_k=4, temperature=1e12)):
            routed = layer(x)
        layer.router.routing_logits.zero_()
        by_task = layer(x)
    torch.testing.assert_close(routed, by_task, rtol=1e-5, atol=1e-4)


def test_content_routing_refuses_training():
    layer = routed_layer().train()
    with layer.context.tasks([0]), layer.context.content_routed(ContentRouting()):
        with pytest.raises(RuntimeError, match="Content routing is for prediction"):
            layer(torch.randn(1, 2, 16))


def test_route_predicts_with_the_union_of_labels(bert_path, worded):
    X, y = worded
    settings = dict(backbone=bert_path, max_epochs=2, batch_size=16, random_state=0, rank=4, max_length=32)
    clf = PolyClassifier(n_skills=3, handle_unknown_task="route", route_top_k=2, **settings).fit(X, y)
    texts = texts_of(X[:16])
    probabilities = clf.predict_proba(texts)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    assert (probabilities > 0).all()  # no task, so no label mask
    assert clf.unknown_task_report_["routed"] == 16
    # Routing by content differs from averaging, and from routing with every skill kept.
    average = clf.set_params(handle_unknown_task="average").predict_proba(texts)
    assert np.abs(average - probabilities).max() > 1e-4
    every_skill = clf.set_params(handle_unknown_task="route", route_top_k=3).predict_proba(texts)
    assert np.abs(every_skill - probabilities).max() > 1e-6


# ------------------------------------------------------------------ every estimator
ESTIMATORS = [
    pytest.param(PolyClassifier, dict(n_skills=2), True, id="poly"),
    pytest.param(PolyClassifier, dict(n_skills=2, n_splits=2), True, id="poly-s"),
    pytest.param(CPolyClassifier, dict(n_shared=2, n_exclusive=1), True, id="cpoly"),
    pytest.param(LoRAClassifier, dict(sharing="private"), False, id="lora"),
    pytest.param(MTLoRAClassifier, dict(n_task_layers=1), False, id="mtlora"),
    pytest.param(PEMTClassifier, dict(), False, id="pemt"),
    pytest.param(skillfit.PolySeq2Seq, dict(n_skills=2), True, id="poly-seq2seq"),
    pytest.param(skillfit.CPolySeq2Seq, dict(n_shared=2, n_exclusive=1, combine="output"), True, id="cpoly-seq2seq"),
    pytest.param(skillfit.LoRASeq2Seq, dict(), False, id="lora-seq2seq"),
    pytest.param(skillfit.MTLoRASeq2Seq, dict(n_task_layers=1), False, id="mtlora-seq2seq"),
    pytest.param(skillfit.PEMTSeq2Seq, dict(), False, id="pemt-seq2seq"),
]


@pytest.mark.slow
@pytest.mark.parametrize("cls, method, routable", ESTIMATORS)
def test_every_estimator_predicts_from_texts_alone(cls, method, routable, worded, tmp_path):
    X, y = worded
    X, y = X[:48], y[:48]
    seq2seq = "Seq2Seq" in cls.__name__
    if seq2seq:
        y = np.asarray([label.split(":")[1] for label in y], dtype=object)
        settings = dict(backbone=tiny_backbone("t5"), max_new_tokens=3)
    else:
        settings = dict(backbone=tiny_backbone("bert"))
    est = cls(handle_unknown_task="infer", max_epochs=1, batch_size=16, random_state=0, rank=4, max_length=32,
              **settings, **method).fit(X, y)
    texts = texts_of(X[:8])
    modes = ["infer", "average"] + (["route", "infer_and_route"] if routable else [])
    outputs = {}
    for mode in modes:
        est.set_params(handle_unknown_task=mode)
        outputs[mode] = est.predict(texts)
        assert len(outputs[mode]) == 8 and est.unknown_task_report_["given"] == 0
    est.set_params(handle_unknown_task="infer")
    assert 0.0 <= est.score(texts, y[:8]) <= 1.0  # score takes texts alone too
    est.set_params(handle_unknown_task="error")
    with pytest.raises(ValueError, match="texts without task ids"):
        est.predict(texts)
    # Round trips keep the identifier and the prototypes.
    est.save_pretrained(tmp_path / "saved")
    loaded = cls.from_pretrained(tmp_path / "saved")
    unpickled = pickle.loads(pickle.dumps(est))
    for copy in (loaded, unpickled):
        np.testing.assert_array_equal(copy.predict_task_proba(texts), est.predict_task_proba(texts))
        for mode in modes:
            copy.set_params(handle_unknown_task=mode)
            np.testing.assert_array_equal(copy.predict(texts), outputs[mode])
    if routable:
        layers = [layer for _, layer in skill_layers_of(loaded) if layer.routes_by_content]
        assert layers and all(layer.route_prototypes is not None for layer in layers)
        for (_, mine), (_, theirs) in zip(skill_layers_of(est), skill_layers_of(loaded)):
            if mine.route_prototypes is not None:
                assert torch.equal(mine.route_prototypes.cpu(), theirs.route_prototypes.cpu())


def skill_layers_of(estimator):
    from skillfit.skills import skill_layers

    return list(skill_layers(estimator.network_.backbone))


def test_folders_saved_before_content_routing_route_after_loading():
    clf = CPolyClassifier.from_pretrained(FIXTURES / "cpoly_classifier", device="cpu")
    expected = json.loads((FIXTURES / "cpoly_classifier_expected.json").read_text())
    texts = [text for text, _ in expected["X"]][:6]
    assert getattr(clf.network_, "task_identifier", None) is None
    clf.set_params(handle_unknown_task="route")
    probabilities = clf.predict_proba(texts)  # prototypes computed from the loaded skills
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    assert clf.unknown_task_report_["routed"] == 6
