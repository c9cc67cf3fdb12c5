"""quantization: every method's skills on bitsandbytes' 8-bit and 4-bit layers, checked against float32."""

import pickle

import numpy as np
import pytest
import torch

from skillfit import CPolyClassifier
from skillfit.skills import skill_layers
from test_precision import METHODS, X, _dtypes, _fit

bitsandbytes = pytest.importorskip("bitsandbytes", reason="quantized backbones need the skillfit[quantization] extra")
QUANTIZED = {"nf4": "Linear4bit", "fp4": "Linear4bit", "int8": "Linear8bitLt"}


def _base_layer_kinds(estimator) -> set:
    return {type(layer.base_layer).__name__ for _, layer in skill_layers(estimator.network_.backbone)}


@pytest.mark.slow
@pytest.mark.parametrize("text_to_text", [False, True], ids=["classifier", "seq2seq"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_wraps_4bit_layers_with_mixed_task_batches(method, text_to_text):
    est = _fit(method, text_to_text, "float32", quantization="nf4", num_beams=2) if text_to_text else \
        _fit(method, text_to_text, "float32", quantization="nf4")
    assert _base_layer_kinds(est) == {"Linear4bit"}
    assert _dtypes(est, trainable=True) == {torch.float32}
    assert np.isfinite(est.loss_curve_).all() and est.loss_curve_[-1] < est.loss_curve_[0]
    mixed = X[::5]  # rows of every task in one batch
    assert len({task for _, task in mixed}) == 3
    assert len(est.predict(mixed)) == len(mixed)


@pytest.mark.slow
@pytest.mark.parametrize("quantization", sorted(QUANTIZED))
def test_each_quantization_trains_and_reloads_exactly(tmp_path, quantization):
    est = _fit("C-Poly", False, "float32", quantization=quantization)
    assert _base_layer_kinds(est) == {QUANTIZED[quantization]}
    expected = est.predict_proba(X)
    est.save_pretrained(tmp_path / "model")
    np.testing.assert_array_equal(CPolyClassifier.from_pretrained(tmp_path / "model").predict_proba(X), expected)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(est)).predict_proba(X), expected)
    again = _fit("C-Poly", False, "float32", quantization=quantization)  # the cached backbone, unchanged by use
    np.testing.assert_array_equal(again.predict_proba(X), expected)


def _dequantized_weight(quantized) -> torch.Tensor:
    """The float32 weight a bitsandbytes layer's stored codes stand for."""
    from bitsandbytes.functional import dequantize_4bit

    if type(quantized).__name__ == "Linear8bitLt":  # int8 codes, one absmax scale per output row
        return quantized.state.CB.float() * quantized.state.SCB.float()[:, None] / 127
    return dequantize_4bit(quantized.weight.data, quantized.weight.quant_state).float()


def _dequantized_copy(estimator):
    """The estimator with every quantized base layer replaced by a float32 nn.Linear of its dequantized weight."""
    import copy

    reference = copy.deepcopy(estimator)
    for _, layer in skill_layers(reference.network_.backbone):
        quantized = layer.base_layer
        dense = torch.nn.Linear(quantized.in_features, quantized.out_features, bias=quantized.bias is not None)
        dense.weight.data = _dequantized_weight(quantized)
        if quantized.bias is not None:
            dense.bias.data = quantized.bias.data.float()
        layer.base_layer = dense.requires_grad_(False)
    return reference


@pytest.mark.parametrize("quantization", ["nf4", "fp4"])
def test_4bit_outputs_match_a_dequantized_float32_reference(quantization):
    est = _fit("C-Poly", False, "float32", quantization=quantization)
    reference = _dequantized_copy(est)
    assert _base_layer_kinds(reference) == {"Linear"}
    np.testing.assert_allclose(est.predict_proba(X), reference.predict_proba(X), atol=1e-5)


def test_8bit_outputs_match_a_dequantized_float32_reference():
    """LLM.int8() also rounds its inputs: each row to 8 bits of its absolute maximum, through float16.

    That rounding step is absmax / 127; for a row of Gaussian activations (absmax about 3
    standard deviations at these widths) its root mean square is 3 / (127 * sqrt(12)), about
    0.7% of the row's. A layer's output is therefore held to 1.5% relative error against the
    dequantized float32 weight (measured 0.52-0.55% over three methods), and the
    probabilities, after every layer and the softmax, to 1e-3 (measured at most 3.7e-5).
    """
    est = _fit("C-Poly", False, "float32", quantization="int8")
    reference = _dequantized_copy(est)
    assert _base_layer_kinds(reference) == {"Linear"}
    inputs = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    quantized_layer = next(layer for _, layer in skill_layers(est.network_.backbone)).base_layer
    dense_layer = next(layer for _, layer in skill_layers(reference.network_.backbone)).base_layer
    with torch.no_grad():
        got, expected = quantized_layer(inputs), dense_layer(inputs)
    assert ((got - expected).norm() / expected.norm()).item() < 0.015
    np.testing.assert_allclose(est.predict_proba(X), reference.predict_proba(X), atol=1e-3)
    assert not np.array_equal(est.predict_proba(X), reference.predict_proba(X))  # the inputs were rounded


def test_8bit_layers_log_no_float16_cast_note(caplog):
    est = _fit("C-Poly", False, "float32", quantization="int8")
    with caplog.at_level("WARNING"):
        est.predict_proba(X)
    assert not [record for record in caplog.records if "will be cast" in record.getMessage()]


def test_quantized_layers_never_merge_and_say_why():
    est = _fit("C-Poly", False, "float32", quantization="nf4")
    one_task = [row for row in X if row[1] == "alpha"]
    merged = est.predict_proba(one_task)
    np.testing.assert_array_equal(est.set_params(merged_inference=False).predict_proba(one_task), merged)
    layer = next(layer for _, layer in skill_layers(est.network_.backbone))
    assert not layer.can_merge
    with pytest.raises(ValueError, match="holds quantized weights; an update cannot be folded"):
        layer.merged_weight(torch.tensor([0]))


def test_a_quantized_backbone_is_never_embedded(tmp_path):
    est = _fit("Poly", False, "float32", quantization="int8")
    with pytest.raises(ValueError, match="include_backbone=True cannot write a quantized backbone"):
        est.save_pretrained(tmp_path / "model", include_backbone=True)
    with pytest.raises(ValueError, match="embed_backbone=True cannot pickle a quantized backbone"):
        _fit("Poly", False, "float32", quantization="int8", embed_backbone=True)


@pytest.mark.slow
def test_threads_predict_on_an_8bit_backbone_as_one_does():
    from concurrent.futures import ThreadPoolExecutor

    est = _fit("C-Poly", False, "float32", quantization="int8")
    alone = [est.predict_proba(X[i::4]) for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda i: est.predict_proba(X[i::4]), list(range(4)) * 3))
    for i, result in enumerate(together):
        np.testing.assert_array_equal(result, alone[i % 4])
