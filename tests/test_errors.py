"""Every error a user can cause names the problem and says what to change."""

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

from skillfit import CPolyClassifier, LoRAClassifier, PolyClassifier
from skillfit._validation import InvalidParameterError

X_OK = [("good movie", "a"), ("bad movie", "a"), ("spam text", "b"), ("ham text", "b")]
Y_OK = ["pos", "neg", "spam", "ham"]


@pytest.mark.parametrize(
    "X, error, message",
    [
        (np.array([["a", "t", "extra"]] * 4, dtype=object), ValueError, r"shape \(4, 3\).*exactly two entries"),
        (["just a text"] * 4, ValueError, "1-dimensional.*pair each text with its task id"),
        (pd.DataFrame({"text": ["a"] * 4, "topic": ["t"] * 4}), ValueError, r"missing the column\(s\) \['task'\].*task_column="),
        ([("fine", "a"), ("  ", "a"), ("x", "b"), ("y", "b")], ValueError, "Row 1 holds an empty text"),
        ([("fine", "a"), (3.5, "a"), ("x", "b"), ("y", "b")], TypeError, "row 1 holds float 3.5"),
        ([("fine", "a"), ("x", None), ("x", "b"), ("y", "b")], ValueError, r"Task ids are missing .* rows \[1\]"),
        ([("fine", "a"), ("x", 1), ("x", "b"), ("y", "b")], TypeError, "all strings or all integers"),
        ([], ValueError, "0 samples"),
    ],
)
def test_bad_X(X, error, message, tiny_kwargs):
    with pytest.raises(error, match=message):
        PolyClassifier(**tiny_kwargs).fit(X, Y_OK)


@pytest.mark.parametrize(
    "y, message",
    [
        (["pos", np.nan, "spam", "ham"], r"missing labels \(None or NaN\) at positions \[1\]"),
        (["pos", None, "spam", "ham"], r"missing labels \(None or NaN\) at positions \[1\]"),
        (["pos", "neg", "spam"], "X has 4 samples, y has 3"),
        (["same"] * 4, "needs at least 2 classes in y; got 1 class"),
        ([0.1, 0.7, 0.3, 0.2], "Unknown label type"),
    ],
)
def test_bad_y(y, message, tiny_kwargs):
    with pytest.raises(ValueError, match=message):
        PolyClassifier(**tiny_kwargs).fit(X_OK, y)


def test_unknown_task_at_predict_names_it(tiny_kwargs):
    clf = LoRAClassifier(**tiny_kwargs).fit(X_OK, Y_OK)
    with pytest.raises(ValueError, match=r"Unknown task id\(s\) \['zeta'\].*fitted on tasks \['a', 'b'\]"):
        clf.predict([("some text", "zeta")])


def test_n_splits_must_divide_layer_width(tiny_kwargs):
    with pytest.raises(ValueError, match="n_splits=5 does not divide the input width 32 of layer 'encoder.layer.0"):
        PolyClassifier(n_splits=5, **tiny_kwargs).fit(X_OK, Y_OK)


@pytest.mark.parametrize(
    "estimator, message",
    [
        (CPolyClassifier(rank=0), r"The 'rank' parameter of CPolyClassifier must be an int in the range \[1, inf\). Got 0 instead."),
        (PolyClassifier(n_skills=2.5), r"The 'n_skills' parameter of PolyClassifier must be an int in the range \[1, inf\). Got 2.5"),
        (CPolyClassifier(combine="sum"), r"The 'combine' parameter of CPolyClassifier must be a str among \{'weight', 'output'\}. Got 'sum'"),
        (LoRAClassifier(sharing="none"), r"'sharing' parameter of LoRAClassifier must be a str among \{'shared', 'private'\}"),
        (CPolyClassifier(learning_rate=-1.0), r"'learning_rate' parameter .* must be a float in the range \(0, inf\)"),
        (CPolyClassifier(random_state="seed"), r"'random_state' parameter .* must be an int in the range \[0, 4294967295\] or None"),
        (CPolyClassifier(verbose=3), r"'verbose' parameter .* must be an int in the range \[0, 2\]"),
        (CPolyClassifier(target_modules=[]), r"'target_modules' parameter .* must be None, a non-empty list of str or a str"),
    ],
)
def test_invalid_parameters(estimator, message):
    with pytest.raises(InvalidParameterError, match=message):
        estimator.fit(X_OK, Y_OK)


def test_cpoly_needs_a_skill(tiny_kwargs):
    with pytest.raises(ValueError, match="n_shared \\+ n_exclusive must be >= 1"):
        CPolyClassifier(n_shared=0, n_exclusive=0, **tiny_kwargs).fit(X_OK, Y_OK)


def test_target_modules_that_match_nothing(tiny_kwargs):
    with pytest.raises(ValueError, match=r"matches no linear layer of BertModel.*'query'"):
        LoRAClassifier(**{**tiny_kwargs, "target_modules": ["q_proj"]}).fit(X_OK, Y_OK)


def test_backbone_not_found_offline_says_how_to_use_a_local_copy(monkeypatch, tiny_kwargs):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match=r"Could not load the backbone 'some-org/no-such-model'.*backbone='/path/to/model'"):
        LoRAClassifier(**{**tiny_kwargs, "backbone": "some-org/no-such-model"}).fit(X_OK, Y_OK)
    with pytest.raises(ValueError, match=r"backbone directory '/no/such/dir' does not exist"):
        LoRAClassifier(**{**tiny_kwargs, "backbone": "/no/such/dir"}).fit(X_OK, Y_OK)


def test_predict_before_fit():
    for method in ("predict", "predict_proba", "predict_log_proba", "score"):
        with pytest.raises(NotFittedError):
            args = (X_OK, Y_OK) if method == "score" else (X_OK,)
            getattr(CPolyClassifier(), method)(*args)


def test_cuda_requested_without_cuda(tiny_kwargs, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device='cuda' was requested but CUDA is not available"):
        LoRAClassifier(**{**tiny_kwargs, "device": "cuda"}).fit(X_OK, Y_OK)
