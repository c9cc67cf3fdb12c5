"""callbacks: the events of fit and adapt, what they carry, stopping, cloning, and results unchanged."""

import pickle

import numpy as np
import pytest
from sklearn.base import clone

from _tiny import tiny_backbone
from conftest import make_multitask
from skillfit import CPolyClassifier, PEMTClassifier, PolySeq2Seq
from skillfit.callbacks import EVENTS, Callback

X, Y = make_multitask(12)
TINY = dict(max_epochs=3, random_state=0, rank=2, max_length=16, batch_size=8)


class Recorder(Callback):
    """Every event, with a copy of the state's fields that matter."""

    def __init__(self):
        self.events = []

    def _record(self, name, state):
        self.events.append((name, state.call, state.stage, state.epoch, state.step, state.n_steps,
                            state.global_step, state.loss, dict(state.learning_rates), state.validation_score))

    def on_fit_begin(self, state):
        self._record("on_fit_begin", state)

    def on_epoch_begin(self, state):
        self._record("on_epoch_begin", state)

    def on_batch_end(self, state):
        self._record("on_batch_end", state)

    def on_epoch_end(self, state):
        self._record("on_epoch_end", state)
        assert state.record is state.history[-1]

    def on_fit_end(self, state):
        self._record("on_fit_end", state)
        assert hasattr(state.estimator, "n_iter_")  # the estimator is fitted when on_fit_end runs


class StopAfter(Callback):
    def __init__(self, event, count):
        self.event, self.count, self.seen = event, count, 0

    def _maybe_stop(self, state):
        self.seen += 1
        if self.seen >= self.count:
            state.stop_training = True

    def on_batch_end(self, state):
        if self.event == "batch":
            self._maybe_stop(state)

    def on_epoch_end(self, state):
        if self.event == "epoch":
            self._maybe_stop(state)


def _cpoly(**params):
    return CPolyClassifier(backbone=tiny_backbone("bert"), n_shared=2, **TINY, **params)


def test_events_come_in_order_with_what_a_callback_needs():
    recorder = Recorder()
    est = _cpoly(callbacks=[recorder]).fit(X, Y, X_val=X[:6], y_val=Y[:6])
    names = [event[0] for event in recorder.events]
    steps = -(-len(X) // 8)
    assert names == ["on_fit_begin"] + (["on_epoch_begin"] + ["on_batch_end"] * steps + ["on_epoch_end"]) * 3 + ["on_fit_end"]
    batch_ends = [event for event in recorder.events if event[0] == "on_batch_end"]
    assert [event[6] for event in batch_ends] == list(range(1, 3 * steps + 1))  # global steps
    assert [event[4] for event in batch_ends] == list(range(1, steps + 1)) * 3  # steps within the epoch
    assert {event[5] for event in batch_ends} == {steps}
    assert all(event[1] == "fit" for event in recorder.events)
    assert set(batch_ends[0][8]) == {"learning_rate", "router_learning_rate"}  # C-Poly trains routers
    epoch_ends = [event for event in recorder.events if event[0] == "on_epoch_end"]
    assert [event[3] for event in epoch_ends] == [1, 2, 3]
    np.testing.assert_allclose([event[7] for event in epoch_ends], est.loss_curve_)
    np.testing.assert_allclose([event[9] for event in epoch_ends], est.validation_scores_)


@pytest.mark.slow
def test_callbacks_leave_results_bit_for_bit_unchanged():
    plain = _cpoly().fit(X, Y)
    watched = _cpoly(callbacks=[Recorder()]).fit(X, Y)
    assert watched.loss_curve_ == plain.loss_curve_
    np.testing.assert_array_equal(watched.predict_proba(X), plain.predict_proba(X))


@pytest.mark.parametrize("event, count, epochs", [("epoch", 2, 2), ("batch", 1, 1)])
def test_a_callback_stops_training_cleanly(event, count, epochs):
    est = _cpoly(callbacks=[StopAfter(event, count)]).fit(X, Y)
    assert est.n_iter_ == epochs and len(est.history_) == epochs
    assert len(est.predict(X)) == len(X)


def test_stopping_after_a_batch_ends_the_epoch_there(tmp_path):
    est = _cpoly(callbacks=[StopAfter("batch", 1)], checkpoint_dir=tmp_path).fit(X, Y)
    assert est.n_iter_ == 1
    again = _cpoly(checkpoint_dir=tmp_path, callbacks=[StopAfter("batch", 1)])
    with pytest.warns(UserWarning, match="resumed from the checkpoint"):
        again.fit(X, Y)  # the checkpoint records the stopped loop as complete: its weights come back as they were
    np.testing.assert_array_equal(again.predict_proba(X), est.predict_proba(X))


@pytest.mark.slow
def test_adapt_and_each_pemt_stage_reach_the_callbacks():
    recorder = Recorder()
    PEMTClassifier(backbone=tiny_backbone("bert"), callbacks=[recorder], **TINY).fit(X, Y)
    stages = [event[2] for event in recorder.events if event[0] == "on_epoch_end"]
    assert stages == ["stage 1"] * 3 + ["stage 2"] * 3
    assert [event[0] for event in recorder.events].count("on_fit_begin") == 1
    cpoly_recorder = Recorder()
    fitted = _cpoly(callbacks=[cpoly_recorder]).fit(X, Y)
    cpoly_recorder.events.clear()
    new_rows = [("a fresh review, great", "new"), ("a fresh review, awful", "new")]
    fitted.adapt(new_rows, ["pos", "neg"], max_epochs=2)
    assert {event[1] for event in cpoly_recorder.events} == {"adapt"}
    assert [event[2] for event in cpoly_recorder.events if event[0] == "on_epoch_end"] == ["adapt:routing"] * 2


def test_seq2seq_estimators_take_callbacks():
    recorder = Recorder()
    targets = [label.split(":")[1] for label in Y]
    PolySeq2Seq(backbone=tiny_backbone("llama"), n_skills=2, max_new_tokens=3, callbacks=[recorder], **TINY).fit(X, targets)
    assert [event[0] for event in recorder.events].count("on_epoch_end") == 3


def test_clone_copies_the_callbacks_and_pickles_keep_them():
    recorder = Recorder()
    est = _cpoly(callbacks=[recorder])
    copy = clone(est)
    assert copy.callbacks[0] is not recorder and isinstance(copy.callbacks[0], Recorder)
    copy.fit(X, Y)
    assert recorder.events == [] and copy.callbacks[0].events
    assert pickle.loads(pickle.dumps(copy)).callbacks[0].events == copy.callbacks[0].events


def test_save_pretrained_leaves_callbacks_out(tmp_path):
    est = _cpoly(callbacks=[Recorder()]).fit(X, Y)
    est.save_pretrained(tmp_path / "model")
    assert CPolyClassifier.from_pretrained(tmp_path / "model").callbacks is None


class Misnamed(Callback):
    def on_epoch_ends(self, state):  # a typo: no event has this name
        pass


@pytest.mark.parametrize("callbacks, error, message", [
    (Callback(), TypeError, "must be None or a list of skillfit.callbacks.Callback objects"),
    ([Callback], TypeError, r"pass an instance: Callback\(\)"),
    ([Misnamed()], ValueError, r"defines \['on_epoch_ends'\], which no event calls"),
    (["print"], TypeError, "has no event method"),
])
def test_bad_callbacks_are_refused_before_training(callbacks, error, message):
    with pytest.raises(error, match=message):
        _cpoly(callbacks=callbacks).fit(X, Y)


def test_an_error_in_a_callback_leaves_the_estimator_as_it_was():
    class Failing(Callback):
        def on_epoch_end(self, state):
            raise RuntimeError("the user's callback failed")

    est = _cpoly(callbacks=[Failing()])
    with pytest.raises(RuntimeError, match="the user's callback failed"):
        est.fit(X, Y)
    assert not hasattr(est, "network_")


def test_the_events_are_the_base_class_methods():
    assert [name for name in dir(Callback) if name.startswith("on_")] == sorted(EVENTS)


def test_the_loop_state_dict_holds_what_a_resumed_loop_needs():
    """A callback reads the running loop's state_dict mid-fit; it has every part a checkpoint stores."""
    seen = {}

    class Capture(Callback):
        def on_batch_end(self, state):
            if state.global_step == 2:
                loop = state.estimator._running_loop
                seen.update(loop.state_dict())

    est = _cpoly(callbacks=[Capture()], early_stopping=True)
    est._running_loop = None
    original = est._training_loop

    def keep_loop(*args, **kwargs):
        est._running_loop = original(*args, **kwargs)
        return est._running_loop

    est._training_loop = keep_loop
    est.fit(X, Y)
    assert {"position", "history", "network", "optimizer", "scheduler", "kept", "stopping", "numpy_rng",
            "torch_rng", "noise_seed", "steps_taken"} <= set(seen)
    assert seen["position"]["step"] == 2 and not seen["position"]["complete"]
    assert seen["steps_taken"] == 2 and seen["optimizer"]["state"]
