"""Property-based tests of every boundary: generated inputs either work or get a clear error of ours.

The examples come from ``_strategies.py``. ``SKILLFIT_HYPOTHESIS_PROFILE=nightly`` runs
1,000 examples per test instead of the 25 of the default ``ci`` profile.
"""

import copy
import os
import tempfile

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _strategies import assert_clean, faithful_fits, inputs, parameter_values, register_profiles, targets
from _tiny import tiny_backbone
from conftest import make_multitask
from skillfit import CPolyClassifier, CPolySeq2Seq, LoRAClassifier, MTLoRASeq2Seq, PEMTClassifier, PolyClassifier

pytestmark = pytest.mark.slow  # property-based sweeps: thousands of cases

register_profiles(settings)

TINY = dict(max_epochs=1, random_state=0, rank=2, max_length=16, batch_size=8)
X_FIT, Y_FIT = make_multitask(6)


@pytest.fixture(scope="module")
def classifier():
    return CPolyClassifier(n_shared=2, n_exclusive=1, backbone=tiny_backbone("bert"), **TINY).fit(X_FIT, Y_FIT)


@pytest.fixture(scope="module")
def generator():
    targets_ = [label.split(":")[1] for label in Y_FIT]
    return CPolySeq2Seq(n_shared=2, n_exclusive=1, backbone=tiny_backbone("llama"), max_new_tokens=3,
                        **TINY).fit(X_FIT, targets_)


@given(X=inputs)
def test_prediction_inputs(classifier, X):
    for method in ("predict", "predict_proba", "predict_log_proba"):  # a generator is used up by the first
        result = assert_clean(lambda: getattr(classifier, method)(X), classifier)  # noqa: B023
        if not isinstance(result, BaseException):
            assert len(result) == len(X)


@given(X=inputs)
def test_generation_inputs(generator, X):
    assert_clean(lambda: generator.predict(X), generator)


@given(X=inputs, y=targets)
def test_score_inputs(classifier, X, y):
    assert_clean(lambda: classifier.score(X, y), classifier)


@given(X=inputs, y=targets)
def test_fit_inputs(X, y):
    est = PolyClassifier(n_skills=2, backbone=tiny_backbone("bert"), **TINY)
    fitted = assert_clean(lambda: est.fit(X, y), est)
    if fitted is est:  # it worked: one label per kept row, tasks as given
        assert len(est.classes_) >= 1 and len(est.tasks_) >= 1


@given(fit=faithful_fits(), container=st.integers(0, 5), y_as=st.sampled_from([list, np.asarray, pd.Series, tuple]))
def test_a_fit_keeps_exactly_the_tasks_and_labels_it_was_given(fit, container, y_as):
    """Never a model silently built from misread input: what a fit that works keeps is what was passed."""
    pairs, y, tasks, labels = fit
    make = _TASKED_CONTAINERS[container]
    est = PolyClassifier(n_skills=2, backbone=tiny_backbone("bert"), **TINY)
    fitted = assert_clean(lambda: est.fit(make(pairs), y_as(y)), est)
    if fitted is not est:  # refused: an iterator (read once), a dict (no row order) or one class
        assert make in _TASKED_CONTAINERS[4:] or len(set(labels)) == 1, f"a valid fit was refused: {fitted}"
        return
    key = int if isinstance(tasks[0], (int, np.integer)) else str
    assert sorted(map(key, est.tasks_)) == sorted(set(map(key, tasks)))
    assert list(est.classes_) == sorted(set(labels))
    predicted = est.predict(make(pairs))
    assert len(predicted) == len(pairs) and set(predicted.tolist()) <= set(est.classes_.tolist())


def _frame(pairs):
    return pd.DataFrame({"text": [p[0] for p in pairs], "task": pd.Series([p[1] for p in pairs], dtype=object)})


def _array(pairs):
    out = np.empty((len(pairs), 2), dtype=object)
    out[:] = [list(p) for p in pairs] if pairs else out
    return out


_TASKED_CONTAINERS = (list, tuple, _frame, _array, lambda pairs: iter(pairs),
                      lambda pairs: {"text": [p[0] for p in pairs], "task": [p[1] for p in pairs]})


@given(X=inputs, y=targets)
def test_fit_inputs_text_to_text(X, y):
    est = CPolySeq2Seq(n_shared=1, n_exclusive=1, backbone=tiny_backbone("llama"), max_new_tokens=2, **TINY)
    assert_clean(lambda: est.fit(X, y), est)


@given(X=inputs, y=targets, mode=st.sampled_from(["routing", "average", "all", "exclusive", "bogus", None, 3]))
def test_adapt_inputs(classifier, X, y, mode):
    est = copy.deepcopy(classifier)
    assert_clean(lambda: est.adapt(X, y, mode=mode), est)


@given(X=inputs)
def test_task_free_inputs(X):
    est = _identifier_model()
    assert_clean(lambda: est.predict_task(X), est)
    assert_clean(lambda: est.predict_task_proba(X), est)


_IDENTIFIER = {}


def _identifier_model():
    if "model" not in _IDENTIFIER:
        _IDENTIFIER["model"] = PolyClassifier(n_skills=2, backbone=tiny_backbone("bert"), handle_unknown_task="infer",
                                              **TINY).fit(X_FIT, Y_FIT)
    return _IDENTIFIER["model"]


ESTIMATORS = [CPolyClassifier, PolyClassifier, LoRAClassifier, PEMTClassifier, CPolySeq2Seq, MTLoRASeq2Seq]


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda cls: cls.__name__)
@given(data=st.data())
def test_every_parameter_at_and_past_its_bounds(cls, data):
    name = data.draw(st.sampled_from(sorted(set(cls().get_params()) - {"backbone"})), label="parameter")
    value = data.draw(parameter_values, label="value")
    if name == "checkpoint_dir" and isinstance(value, str) and value.strip():
        value = os.path.join(tempfile.mkdtemp(), value)  # checkpoints go to a temporary folder, never the checkout
    seq2seq = "Seq2Seq" in cls.__name__
    est = cls(backbone=tiny_backbone("llama" if seq2seq else "bert"), **TINY)
    if assert_clean(lambda: est.set_params(**{name: value}), est) is not est:
        return
    if isinstance(value, (int, np.integer)) and value > 64:
        return  # valid, and a request for much work (epochs, beams); skill sizes: see the test below
    y = [label.split(":")[1] for label in Y_FIT] if seq2seq else Y_FIT
    assert_clean(lambda: est.fit(X_FIT, y))


@given(path=st.one_of(st.text(max_size=30), st.just(""), st.just("\ud800"), st.just("/nonexistent/model"),
                      st.just("."), st.integers(), st.none(), st.binary(max_size=5)))
def test_from_pretrained_paths(path):
    assert_clean(lambda: PolyClassifier.from_pretrained(path))


def test_large_integer_task_ids_get_a_clear_error(classifier):
    error = assert_clean(lambda: classifier.predict([("w1 apple", 2**70)]))
    assert isinstance(error, ValueError) and "64-bit" in str(error)


def test_unpaired_surrogates_get_a_clear_error(classifier):
    error = assert_clean(lambda: classifier.predict([("w1 \ud800 apple", "alpha")]))
    assert isinstance(error, ValueError) and "not valid Unicode" in str(error) and "Row 0" in str(error)


def test_continuous_labels_name_the_argument(classifier):
    error = assert_clean(lambda: classifier.score(X_FIT[:2], [0.5, 1.25]))
    assert isinstance(error, ValueError) and str(error).startswith("y holds continuous values")
    np.testing.assert_array_equal(classifier.predict(X_FIT[:2]).shape, (2,))


@pytest.mark.parametrize("cls, size", [(PolyClassifier, "n_skills"), (CPolyClassifier, "n_shared"),
                                       (CPolyClassifier, "n_exclusive"), (PolyClassifier, "rank"),
                                       (MTLoRASeq2Seq, "task_rank")])
@pytest.mark.parametrize("value", [2**40, 2**62])
def test_skill_sizes_beyond_memory_are_refused_before_allocating(cls, size, value):
    seq2seq = "Seq2Seq" in cls.__name__
    est = cls(backbone=tiny_backbone("llama" if seq2seq else "bert"), **{**TINY, size: value})
    y = [label.split(":")[1] for label in Y_FIT] if seq2seq else Y_FIT
    error = assert_clean(lambda: est.fit(X_FIT, y), est)
    assert isinstance(error, ValueError) and "GiB with their gradients and AdamW state" in str(error)
    assert f"now {value}" in str(error) and not hasattr(est, "network_")
