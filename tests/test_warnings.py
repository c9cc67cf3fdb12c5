"""Every public warning names the user's line (skillfit._warnings.warn_user), however deep it is raised."""

import json
import re
from contextlib import contextmanager

import numpy as np
import pytest

from conftest import make_multitask
from skillfit import CPolyClassifier, PEMTClassifier, PolyClassifier, _precision
from skillfit.callbacks import Callback

X, Y = make_multitask(12)


@contextmanager
def warns_here(category, match):
    """As pytest.warns, and the matching warnings are attributed to this test file."""
    with pytest.warns(category, match=match) as record:
        yield
    matching = [w for w in record if re.search(match, str(w.message))]
    assert matching and all(w.filename == __file__ for w in matching), [(w.filename, w.lineno) for w in matching]


class InterruptInEpoch(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_begin(self, state):
        if state.epoch == self.epoch:
            raise KeyboardInterrupt


def test_fit_warnings_name_the_callers_line(tiny_kwargs, tmp_path):
    with warns_here(UserWarning, r"task id of its own .* is each pair \(task, text\)"):
        PolyClassifier(**tiny_kwargs).fit([(f"task{i}", f"some text {i}") for i in range(24)], ["a", "b"] * 12)
    with warns_here(UserWarning, "checkpoint_every is set but checkpoint_dir is None"):
        PolyClassifier(**tiny_kwargs, checkpoint_every=2).fit(X, Y)
    with warns_here(UserWarning, "more than the 64 positions"):
        PolyClassifier(**{**tiny_kwargs, "max_length": 128}).fit([(" ".join(["w1"] * 100), "a")] + X[1:], Y)
    with warns_here(UserWarning, r"describes task\(s\) \['bb'\] that X does not have"):
        PEMTClassifier(**tiny_kwargs, task_descriptions={"bb": "no such task"}).fit(X, Y)
    from sklearn.exceptions import DataConversionWarning

    with warns_here(DataConversionWarning, "column-vector y"):
        PolyClassifier(**tiny_kwargs).fit(X, np.asarray(Y).reshape(-1, 1))


def test_training_warnings_name_the_callers_line(tiny_kwargs, tmp_path):
    with warns_here(UserWarning, "fit was interrupted after 1 epoch"):
        PolyClassifier(**tiny_kwargs, callbacks=[InterruptInEpoch(2)]).fit(X, Y)
    with pytest.warns(UserWarning):
        PolyClassifier(**tiny_kwargs, checkpoint_dir=tmp_path, callbacks=[InterruptInEpoch(2)]).fit(X, Y)
    with warns_here(UserWarning, "resumed from the checkpoint"):
        PolyClassifier(**tiny_kwargs, checkpoint_dir=tmp_path).fit(X, Y)
    est = PolyClassifier(**{**tiny_kwargs, "max_epochs": 1}).partial_fit(X, Y)
    with warns_here(UserWarning, "the linear schedule has ended"):
        est.partial_fit(X, Y)


def test_loading_warnings_name_the_callers_line(tiny_kwargs, tmp_path, monkeypatch):
    est = CPolyClassifier(**tiny_kwargs, n_shared=2, backbone_dtype="bfloat16").fit(X, Y)
    est.save_pretrained(tmp_path / "model")
    config_path = tmp_path / "model" / "skillfit_config.json"
    config = json.loads(config_path.read_text())
    config["versions"]["skillfit"] = "0.0.1"
    config_path.write_text(json.dumps(config))
    with warns_here(UserWarning, "was saved with skillfit 0.0.1"):
        CPolyClassifier.from_pretrained(tmp_path / "model")
    monkeypatch.setattr(_precision, "supports_bfloat16", lambda device: False)
    with warns_here(UserWarning, "does not support bfloat16"):
        CPolyClassifier.from_pretrained(tmp_path / "model")
