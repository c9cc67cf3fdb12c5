"""partial_fit: passes that add up to fit, scikit-learn's semantics, clear refusals, and Optuna's pruning."""

import pickle
import warnings

import numpy as np
import pytest

from _tiny import tiny_backbone
from conftest import make_multitask
from skillfit import CPolyClassifier, PEMTClassifier, PolySeq2Seq

X, Y = make_multitask(12)
CLASSES = np.unique(Y)


def _cpoly(**params):
    settings = dict(backbone=tiny_backbone("bert"), n_shared=2, max_epochs=3, rank=2, max_length=16, batch_size=8,
                    random_state=0)
    return CPolyClassifier(**{**settings, **params})


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_max_epochs_passes_give_the_model_of_one_fit(schedule):
    whole = _cpoly(lr_schedule=schedule).fit(X, Y)
    passes = _cpoly(lr_schedule=schedule)
    for _ in range(3):
        passes = pickle.loads(pickle.dumps(passes.partial_fit(X, Y, classes=CLASSES)))  # the state travels too
    assert passes.loss_curve_ == whole.loss_curve_
    np.testing.assert_array_equal(passes.predict_proba(X), whole.predict_proba(X))


def test_text_to_text_passes_give_the_model_of_one_fit():
    targets = [label.split(":")[1] for label in Y]
    settings = dict(backbone=tiny_backbone("llama"), n_skills=2, max_epochs=2, rank=2, max_length=16, batch_size=8,
                    random_state=0, max_new_tokens=3)
    whole = PolySeq2Seq(**settings).fit(X, targets)
    passes = PolySeq2Seq(**settings).partial_fit(X, targets).partial_fit(X, targets)
    assert passes.loss_curve_ == whole.loss_curve_
    assert passes.predict(X).tolist() == whole.predict(X).tolist()
    with pytest.raises(ValueError, match="generates text and has no classes"):
        PolySeq2Seq(**settings).partial_fit(X, targets, classes=["a", "b"])


def test_each_call_is_one_epoch_on_the_data_it_gets():
    est = _cpoly(max_epochs=4)
    first, second = X[::2], X[1::2]
    est.partial_fit(first, Y[::2], classes=CLASSES)
    est.partial_fit(second, Y[1::2])
    assert est.n_iter_ == 2 and len(est.history_) == 2
    assert sorted(est.tasks_.tolist()) == sorted({task for _, task in X})


def test_the_first_call_fixes_tasks_and_classes_and_later_calls_keep_them():
    est = _cpoly().partial_fit(X[:6], Y[:6], classes=CLASSES)
    assert est.classes_.tolist() == CLASSES.tolist()
    with pytest.raises(ValueError, match=r"partial_fit continues the tasks it was fitted on, but X has new task\(s\)"):
        est.partial_fit([("text", "unseen task")], [Y[0]])
    with pytest.raises(ValueError, match="differs from the classes of the first partial_fit call"):
        est.partial_fit(X, Y, classes=CLASSES[:2])
    with pytest.raises(ValueError, match=r"y has label\(s\) \['nope'\] that are not in classes given at the first"):
        est.partial_fit(X[:2], ["nope", Y[1]])
    assert est.n_iter_ == 1  # the refused calls left it as it was


def test_a_later_call_may_bring_a_task_a_label_of_classes_it_had_not_had():
    task = X[0][1]
    rows = [i for i, (_, t) in enumerate(X) if t == task]
    labels = sorted({Y[i] for i in rows})
    first = [i for i in range(len(X)) if not (X[i][1] == task and Y[i] == labels[1])]
    est = _cpoly().partial_fit([X[i] for i in first], [Y[i] for i in first], classes=CLASSES)
    column = est.classes_.tolist().index(labels[1])
    assert est.predict_proba([X[rows[0]]])[0, column] == 0.0  # the task cannot predict the label yet
    est.partial_fit(X, Y)
    assert est.predict_proba([X[rows[0]]])[0, column] > 0.0


@pytest.mark.slow
def test_passes_past_max_epochs_warn_that_the_schedule_has_ended():
    est = _cpoly(max_epochs=1).partial_fit(X, Y)
    before = est.predict_proba(X)
    with pytest.warns(UserWarning, match="the linear schedule has ended at a learning rate of 0"):
        est.partial_fit(X, Y)
    np.testing.assert_array_equal(est.predict_proba(X), before)
    constant = _cpoly(max_epochs=1, lr_schedule="constant").partial_fit(X, Y)
    before = constant.predict_proba(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        constant.partial_fit(X, Y)
    assert not np.array_equal(constant.predict_proba(X), before)


@pytest.mark.slow
def test_fit_after_partial_fit_starts_over_and_pemt_refuses():
    est = _cpoly().partial_fit(X, Y)
    est.fit(X, Y)
    np.testing.assert_array_equal(est.predict_proba(X), _cpoly().fit(X, Y).predict_proba(X))
    assert "_partial_state" not in est.__dict__
    with pytest.raises(ValueError, match="cannot train in passes"):
        PEMTClassifier(backbone=tiny_backbone("bert"), max_epochs=1).partial_fit(X, Y)


@pytest.mark.slow
def test_optuna_prunes_trials_by_partial_fit_and_refits_the_best():
    optuna = pytest.importorskip("optuna")
    integration = pytest.importorskip("optuna_integration")
    from optuna.distributions import CategoricalDistribution

    class PruneOddTrials(optuna.pruners.BasePruner):
        """Prunes every odd-numbered trial after its first pass: a pruning that does not hang on the scores."""

        def prune(self, study, trial):
            return trial.number % 2 == 1 and trial.last_step is not None and trial.last_step >= 0

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=PruneOddTrials(), sampler=optuna.samplers.RandomSampler(0))
    search = integration.OptunaSearchCV(
        _cpoly(), {"learning_rate": CategoricalDistribution([1e-3, 1e-2])}, cv=2, n_trials=4, max_iter=3,
        enable_pruning=True, study=study, random_state=0, error_score="raise",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        search.fit(X, Y)
    states = [trial.state for trial in study.trials]
    assert states.count(optuna.trial.TrialState.PRUNED) == 2
    assert states.count(optuna.trial.TrialState.COMPLETE) == 2
    assert all(len(trial.intermediate_values) == 1 for trial in study.trials if trial.state.name == "PRUNED")
    assert all(len(trial.intermediate_values) == 3 for trial in study.trials if trial.state.name == "COMPLETE")
    best = search.best_estimator_
    assert best.n_iter_ == 3 and len(best.predict(X)) == len(X)
    assert best.learning_rate == study.best_params["learning_rate"]


def test_a_failed_pass_leaves_the_sequence_as_it_was():
    from skillfit.callbacks import Callback

    class FailsAtStep(Callback):
        def on_batch_end(self, state):
            if state.step == 1:
                raise RuntimeError("failed mid-pass")

    clean = _cpoly().partial_fit(X, Y).partial_fit(X, Y)
    est = _cpoly().partial_fit(X, Y)
    est.set_params(callbacks=[FailsAtStep()])
    with pytest.raises(RuntimeError, match="failed mid-pass"):
        est.partial_fit(X, Y)  # the optimizer stepped the state's tensors before failing
    est.set_params(callbacks=None).partial_fit(X, Y)
    assert est.loss_curve_ == clean.loss_curve_
    np.testing.assert_array_equal(est.predict_proba(X), clean.predict_proba(X))
