"""backbone_dtype: frozen weights in low precision, float32 skills, kept by every way a model travels."""

import json
import pickle
import warnings

import numpy as np
import pytest
import torch

from _tiny import tiny_backbone
from conftest import make_multitask
from skillfit import (
    CPolyClassifier, CPolySeq2Seq, LoRAClassifier, LoRASeq2Seq, MTLoRAClassifier, MTLoRASeq2Seq, PEMTClassifier,
    PEMTSeq2Seq, PolyClassifier, PolySeq2Seq,
)
from skillfit import _precision
from skillfit.skills import skill_layers

TINY = dict(max_epochs=2, random_state=0, rank=2, max_length=16, batch_size=8)
X, Y = make_multitask(12)
TARGETS = [label.split(":")[1] for label in Y]

METHODS = {
    "LoRA shared": (lambda **kw: LoRAClassifier(sharing="shared", **kw), lambda **kw: LoRASeq2Seq(sharing="shared", **kw)),
    "LoRA private": (lambda **kw: LoRAClassifier(sharing="private", **kw), lambda **kw: LoRASeq2Seq(sharing="private", **kw)),
    "Poly": (lambda **kw: PolyClassifier(n_skills=2, **kw), lambda **kw: PolySeq2Seq(n_skills=2, **kw)),
    "Poly-S": (lambda **kw: PolyClassifier(n_skills=2, n_splits=2, **kw), lambda **kw: PolySeq2Seq(n_skills=2, n_splits=2, **kw)),
    "C-Poly": (lambda **kw: CPolyClassifier(n_shared=2, **kw), lambda **kw: CPolySeq2Seq(n_shared=2, **kw)),
    "C-Poly output": (lambda **kw: CPolyClassifier(n_shared=2, combine="output", **kw),
                      lambda **kw: CPolySeq2Seq(n_shared=2, combine="output", **kw)),
    "MTLoRA": (lambda **kw: MTLoRAClassifier(**kw), lambda **kw: MTLoRASeq2Seq(**kw)),
    "PEMT": (lambda **kw: PEMTClassifier(**kw), lambda **kw: PEMTSeq2Seq(**kw)),
}


def _fit(method: str, text_to_text: bool, dtype: str, **extra):
    make = METHODS[method][text_to_text]
    backbone = tiny_backbone("llama" if text_to_text else "bert")
    kwargs = dict(backbone=backbone, backbone_dtype=dtype, **TINY, **extra)
    if text_to_text:
        kwargs["max_new_tokens"] = 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return make(**kwargs).fit(X, TARGETS if text_to_text else Y)


def _dtypes(estimator, trainable: bool) -> set:
    """The dtypes of the trained tensors, or of the backbone's own frozen weights (not frozen skills)."""
    if trainable:
        return {p.dtype for p in estimator.network_.parameters() if p.requires_grad}
    backbone = estimator.network_.backbone
    bases = {layer.base_layer.weight.dtype for _, layer in skill_layers(backbone)}
    return bases | {backbone.get_input_embeddings().weight.dtype}


@pytest.mark.parametrize("text_to_text", [False, True], ids=["classifier", "seq2seq"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_float32_skills_on_a_bfloat16_backbone(method, text_to_text):
    est = _fit(method, text_to_text, "bfloat16")
    assert _dtypes(est, trainable=False) == {torch.bfloat16}
    assert _dtypes(est, trainable=True) == {torch.float32}
    assert np.isfinite(est.loss_curve_).all() and est.loss_curve_[-1] < est.loss_curve_[0]
    predictions = est.predict(X[:6])
    assert len(predictions) == 6
    if not text_to_text:
        proba = est.predict_proba(X[:6])
        assert proba.dtype == np.float32 or proba.dtype == np.float64
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["C-Poly", "LoRA private", "PEMT"])
def test_bfloat16_probabilities_stay_close_to_float32(method):
    full = _fit(method, False, "float32").predict_proba(X)
    low = _fit(method, False, "bfloat16").predict_proba(X)
    assert np.abs(full - low).max() < 0.05


def test_auto_is_float32_on_the_cpu_and_asked_dtypes_are_kept():
    assert _precision.chosen_dtype("auto", torch.device("cpu")) is torch.float32
    assert _precision.chosen_dtype("float16", torch.device("cpu")) is torch.float16
    est = _fit("C-Poly", False, "auto")
    assert _dtypes(est, trainable=False) == {torch.float32}
    assert est._backbone_reference["dtype"] == "float32"


@pytest.mark.slow
@pytest.mark.parametrize("include_backbone", [False, True], ids=["by-reference", "embedded"])
def test_saving_and_pickling_keep_the_dtype_and_the_predictions(tmp_path, include_backbone):
    est = _fit("C-Poly", True, "bfloat16")
    expected = est.predict(X)
    est.save_pretrained(tmp_path / "model", include_backbone=include_backbone)
    assert json.loads((tmp_path / "model" / "skillfit_config.json").read_text())["backbone"]["dtype"] == "bfloat16"
    loaded = CPolySeq2Seq.from_pretrained(tmp_path / "model")
    assert _dtypes(loaded, trainable=False) == {torch.bfloat16}
    np.testing.assert_array_equal(loaded.predict(X), expected)
    unpickled = pickle.loads(pickle.dumps(est))
    assert _dtypes(unpickled, trainable=False) == {torch.bfloat16}
    np.testing.assert_array_equal(unpickled.predict(X), expected)


def test_a_reload_without_bfloat16_falls_back_to_float32_with_a_warning(tmp_path, monkeypatch):
    est = _fit("C-Poly", False, "bfloat16")
    est.save_pretrained(tmp_path / "model")
    monkeypatch.setattr(_precision, "supports_bfloat16", lambda device: False)
    with pytest.warns(UserWarning, match="does not support bfloat16: the backbone is loaded in float32"):
        loaded = CPolyClassifier.from_pretrained(tmp_path / "model")
    assert _dtypes(loaded, trainable=False) == {torch.float32}
    assert np.abs(loaded.predict_proba(X) - est.predict_proba(X)).max() < 0.05


def test_a_folder_saved_before_the_option_loads_in_float32_and_a_damaged_dtype_is_named(tmp_path):
    est = _fit("Poly", False, "float32")
    est.save_pretrained(tmp_path / "model")
    config_path = tmp_path / "model" / "skillfit_config.json"
    config = json.loads(config_path.read_text())
    del config["backbone"]["dtype"]
    config_path.write_text(json.dumps(config))
    loaded = PolyClassifier.from_pretrained(tmp_path / "model")
    np.testing.assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))
    config["backbone"]["dtype"] = "int3"
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="names the backbone dtype 'int3'"):
        PolyClassifier.from_pretrained(tmp_path / "model")


def test_adapt_and_peft_export_work_on_a_bfloat16_backbone(tmp_path):
    est = _fit("C-Poly", False, "bfloat16")
    new_X = [(text, "delta") for text, _ in X[:12]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        est.adapt(new_X, Y[:12], mode="average", max_epochs=1)
    assert "delta" in list(est.tasks_) and _dtypes(est, trainable=False) == {torch.bfloat16}
    assert len(est.predict(new_X)) == 12
    est.export_peft(tmp_path / "adapter", task="alpha")
    from safetensors.torch import load_file

    tensors = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert {tensor.dtype for tensor in tensors.values()} == {torch.float32}


def test_checkpoints_follow_the_dtype_the_backbone_loads_in(tmp_path):
    _fit("Poly", False, "float32", checkpoint_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 1
    same = PolyClassifier(n_skills=2, backbone=tiny_backbone("bert"), backbone_dtype="auto", checkpoint_dir=tmp_path, **TINY)
    with pytest.warns(UserWarning, match="resumed"):  # "auto" is float32 on the CPU: the same fit
        same.fit(X, Y)
    _fit("Poly", False, "bfloat16", checkpoint_dir=tmp_path)  # another fit: its own checkpoint
    assert len(list(tmp_path.iterdir())) == 2


def test_warm_start_refuses_a_new_dtype():
    est = _fit("Poly", False, "float32")
    est.set_params(warm_start=True, backbone_dtype="bfloat16")
    with pytest.raises(ValueError, match="backbone_dtype"):
        est.fit(X, Y)
