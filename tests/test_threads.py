"""One fitted estimator served from several threads: same answers as alone, clear errors for what may not overlap."""

import copy
import logging
import pickle
import threading

import numpy as np
import pytest
from transformers.utils import logging as hf_logging

from _tiny import tiny_backbone
from conftest import make_multitask
from skillfit import ConcurrentUseError, CPolyClassifier, CPolySeq2Seq, PolyClassifier

N_THREADS = 4


def prediction_calls(X, n_calls=16, seed=0):
    """Calls of 1 to 19 rows: mixed tasks, and every third call one task only."""
    rng = np.random.default_rng(seed)
    calls = []
    for i in range(n_calls):
        rows = rng.choice(len(X), size=int(rng.integers(1, 20)), replace=False)
        if i % 3 == 0:
            task = X[rows[0]][1]
            rows = [j for j in range(len(X)) if X[j][1] == task][: len(rows)]
        calls.append([X[j] for j in rows])
    return calls


def run_in_threads(call, arguments, n_threads=N_THREADS):
    """``call`` on every argument, spread over threads started together; results in order, errors raised."""
    results, errors = [None] * len(arguments), []
    start = threading.Barrier(n_threads)

    def work(first):
        start.wait()
        for i in range(first, len(arguments), n_threads):
            try:
                results[i] = call(arguments[i])
            except Exception as error:  # collected: the test fails on any
                errors.append(error)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def assert_same_as_alone(call, arguments):
    alone = [call(argument) for argument in arguments]
    together = run_in_threads(call, arguments)
    for a, b in zip(alone, together):
        np.testing.assert_array_equal(a, b)  # exactly: the same batches, the same numbers


@pytest.fixture(scope="module")
def classifier_data():
    return make_multitask(30)


@pytest.fixture(scope="module")
def fitted_cpoly(classifier_data):
    X, y = classifier_data
    return CPolyClassifier(n_shared=2, n_exclusive=1, backbone=tiny_backbone("bert"), max_epochs=1, batch_size=16,
                           random_state=0, rank=4, max_length=32).fit(X, y)


@pytest.mark.slow
@pytest.mark.parametrize("merged", [True, False])
def test_classifier_predictions_from_threads_equal_those_made_alone(fitted_cpoly, classifier_data, merged):
    X, y = classifier_data
    est = copy.deepcopy(fitted_cpoly).set_params(merged_inference=merged)
    calls = prediction_calls(X)
    assert_same_as_alone(est.predict_proba, calls)
    assert_same_as_alone(est.predict, calls)
    labels = dict(zip(map(tuple, X), y))
    assert_same_as_alone(lambda rows: est.score(rows, [labels[tuple(r)] for r in rows]), calls)


@pytest.mark.slow
def test_task_free_predictions_from_threads_equal_those_made_alone(classifier_data):
    X, y = classifier_data
    est = PolyClassifier(n_skills=2, backbone=tiny_backbone("bert"), max_epochs=1, random_state=0, rank=2,
                         max_length=32, handle_unknown_task="infer").fit(X, y)
    calls = prediction_calls(X)
    assert_same_as_alone(lambda rows: est.predict_task([text for text, _ in rows]), calls)
    assert_same_as_alone(lambda rows: est.predict_proba([(text, None) for text, _ in rows]), calls)
    est.set_params(handle_unknown_task="route")
    assert_same_as_alone(lambda rows: est.predict_proba([(text, None) for text, _ in rows]), calls)


def test_each_thread_reads_the_report_of_its_own_last_prediction(classifier_data):
    X, y = classifier_data
    est = PolyClassifier(n_skills=2, backbone=tiny_backbone("bert"), max_epochs=1, random_state=0, rank=2,
                         max_length=32, handle_unknown_task="average").fit(X, y)

    def predict_and_report(n_missing):
        rows = [(text, None) if i < n_missing else (text, task) for i, (text, task) in enumerate(X[:12])]
        reports = []
        for _ in range(5):
            est.predict(rows)
            reports.append(est.unknown_task_report_["averaged"])
        return reports

    reports = run_in_threads(predict_and_report, [0, 3, 6, 9])
    assert reports == [[0] * 5, [3] * 5, [6] * 5, [9] * 5]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["llama", "t5"])
def test_generation_from_threads_equals_generation_alone(kind):
    X, y = make_multitask(20)
    targets = [label.split(":")[1] for label in y]
    est = CPolySeq2Seq(n_shared=2, n_exclusive=1, backbone=tiny_backbone(kind), max_epochs=1, random_state=0,
                       rank=4, max_length=32, max_new_tokens=4).fit(X, targets)
    calls = prediction_calls(X, n_calls=12)
    for settings in ({}, {"num_beams": 2}, {"answer_choices": "auto"}, {"do_sample": True},
                     {"merged_inference": False}):
        est.set_params(**{**dict(num_beams=1, answer_choices=None, do_sample=False, merged_inference=True), **settings})
        assert_same_as_alone(est.predict, calls)


class Blocked:
    """Holds the first call of ``est``'s ``method`` until released, so that other calls overlap it."""

    def __init__(self, est, monkeypatch, method="_predict_proba_encoded"):
        self.inside, self.release = threading.Event(), threading.Event()
        original = getattr(est, method)

        def wait_inside(*args, **kwargs):
            if not self.inside.is_set():
                self.inside.set()
                assert self.release.wait(30)
            return original(*args, **kwargs)

        monkeypatch.setattr(est, method, wait_inside)

    def run(self, call):
        self.thread = threading.Thread(target=call)
        self.thread.start()
        assert self.inside.wait(30)
        return self

    def finish(self):
        self.release.set()
        self.thread.join()


def snapshot(est):
    """The estimator's attributes (by identity) and its network's tensors (by value)."""
    return ({key: id(value) for key, value in vars(est).items()},
            {name: tensor.clone() for name, tensor in est.network_.state_dict().items()}.keys(),
            [float(tensor.double().sum()) for tensor in est.network_.state_dict().values()])


def test_calls_that_change_the_estimator_are_refused_while_another_thread_predicts(
        fitted_cpoly, classifier_data, monkeypatch):
    X, y = classifier_data
    est = copy.deepcopy(fitted_cpoly)
    expected = est.predict_proba(X[:5])
    blocked = Blocked(est, monkeypatch).run(lambda: est.predict_proba(X[:5]))
    try:
        before = snapshot(est)
        for call, name in ((lambda: est.fit(X, y), "fit"),
                           (lambda: est.adapt(X[:4], y[:4]), "adapt"),
                           (lambda: est.set_params(rank=2), "set_params"),
                           (lambda: est.fit_task_identifier(X), "fit_task_identifier")):
            with pytest.raises(ConcurrentUseError, match=rf"CPolyClassifier\.{name} was called while another "
                                                         r"thread runs CPolyClassifier\.predict_proba"):
                call()
        assert est.rank == 4 and snapshot(est) == before  # nothing changed
        np.testing.assert_array_equal(est.predict_proba(X[:5]), expected)  # readers still share it
    finally:
        blocked.finish()
    est.set_params(rank=4)  # once the prediction ended, changes are allowed again


def test_predictions_are_refused_while_another_thread_fits(classifier_data, monkeypatch):
    X, y = classifier_data
    est = PolyClassifier(n_skills=2, backbone=tiny_backbone("bert"), max_epochs=1, random_state=0, rank=2, max_length=32)
    est.fit(X, y)
    blocked = Blocked(est, monkeypatch, method="_train").run(lambda: est.fit(X, y))
    try:
        with pytest.raises(ConcurrentUseError, match=r"PolyClassifier\.predict was called while another thread "
                                                     r"runs PolyClassifier\.fit on the same estimator\. fit changes"):
            est.predict(X[:3])
        with pytest.raises(ConcurrentUseError, match=r"PolyClassifier\.save_pretrained .*PolyClassifier\.fit"):
            est.save_pretrained("unused-folder")
    finally:
        blocked.finish()
    assert est.predict(X[:3]).shape == (3,)


@pytest.mark.slow
def test_a_copy_adapts_and_fits_while_the_original_serves(fitted_cpoly, classifier_data):
    X, y = classifier_data
    est = copy.deepcopy(fitted_cpoly)
    calls = prediction_calls(X, n_calls=24)
    alone = [est.predict_proba(rows) for rows in calls]
    new_X = [(text, "new task") for text, _ in X[:8]]

    def change_copies(_):
        copy.deepcopy(est).adapt(new_X, ["new:yes", "new:no"] * 4, max_epochs=1)
        pickle.loads(pickle.dumps(est)).set_params(max_epochs=1).fit(X[:30], y[:30])

    served = []
    changer = threading.Thread(target=change_copies, args=(None,))
    changer.start()
    served = run_in_threads(est.predict_proba, calls, n_threads=3)
    changer.join()
    for a, b in zip(alone, served):
        np.testing.assert_array_equal(a, b)
    assert list(est.tasks_) == ["alpha", "beta", "gamma"]


def test_fits_of_copies_in_threads_equal_fits_made_one_after_another(classifier_data):
    X, y = classifier_data
    template = PolyClassifier(n_skills=2, backbone=tiny_backbone("bert"), max_epochs=1, rank=2, max_length=32)
    seeds = [0, 1, 0, 1]
    alone = [copy.deepcopy(template).set_params(random_state=s).fit(X, y).loss_curve_ for s in seeds]
    hf_logging.set_verbosity(logging.INFO)
    try:
        together = run_in_threads(lambda s: copy.deepcopy(template).set_params(random_state=s).fit(X, y).loss_curve_,
                                  seeds)
        # Each fit silences the libraries; the last one out restores what the first found.
        assert hf_logging.get_verbosity() == logging.INFO
    finally:
        hf_logging.set_verbosity_warning()
    assert together == alone


def test_an_estimator_used_from_threads_still_pickles_and_copies(fitted_cpoly, classifier_data):
    X, _ = classifier_data
    est = copy.deepcopy(fitted_cpoly)
    run_in_threads(est.predict, prediction_calls(X, n_calls=8))
    context = est.network_.context
    assert "_per_thread" in vars(context)  # the threads' scope state ...
    restored = pickle.loads(pickle.dumps(est))
    assert "_per_thread" not in vars(restored.network_.context)  # ... is not carried by a copy
    np.testing.assert_array_equal(restored.predict_proba(X[:6]), est.predict_proba(X[:6]))


@pytest.mark.slow
def test_prediction_from_worker_processes_matches(fitted_cpoly, classifier_data):
    joblib = pytest.importorskip("joblib")
    X, _ = classifier_data
    calls = prediction_calls(X, n_calls=4)
    parallel = joblib.Parallel(n_jobs=2, backend="loky")(joblib.delayed(fitted_cpoly.predict_proba)(rows) for rows in calls)
    for rows, result in zip(calls, parallel):
        # Another process may run other kernels (its own thread count): equal to float precision, not bit for bit.
        np.testing.assert_allclose(fitted_cpoly.predict_proba(rows), result, rtol=1e-6, atol=1e-7)
