"""estimate_memory: the parts it predicts match the network a fit builds, and scale as they must."""

import warnings

import pytest
import torch

from _tiny import tiny_backbone
from conftest import make_multitask
from skillfit import CPolyClassifier, CPolySeq2Seq, LoRASeq2Seq, PolySeq2Seq

X, Y = make_multitask(4)
TARGETS = [label.split(":")[1] for label in Y]
SETTINGS = dict(max_epochs=1, random_state=0, rank=4, batch_size=8, max_length=32)


def _fitted(make, targets):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return make().fit(X, targets)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["llama", "t5", "gpt2", "bart"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_weights_and_trainable_bytes_equal_those_of_a_fitted_network(kind, dtype):
    make = lambda: CPolySeq2Seq(n_shared=2, backbone=tiny_backbone(kind), backbone_dtype=dtype, **SETTINGS)  # noqa: E731
    fitted = _fitted(make, TARGETS)
    estimate = make().estimate_memory(n_tasks=3)
    params = list(fitted.network_.parameters())
    assert estimate.trainable == sum(p.numel() * p.element_size() for p in params if p.requires_grad)
    frozen = sum(p.numel() * p.element_size() for p in params if not p.requires_grad)
    frozen += sum(b.numel() * b.element_size() for name, b in fitted.network_.named_buffers()
                  if not name.endswith("route_prototypes"))  # made after training, for task-free prediction
    assert estimate.frozen_weights == frozen
    assert estimate.gradients == estimate.trainable and estimate.optimizer == 2 * estimate.trainable


def test_a_classifier_head_counts_its_labels():
    make = lambda: CPolyClassifier(n_shared=2, backbone=tiny_backbone("bert"), **SETTINGS)  # noqa: E731
    fitted = _fitted(make, Y)
    estimate = make().estimate_memory(n_tasks=3, n_labels=len(fitted.classes_))
    assert estimate.trainable == sum(p.numel() * 4 for p in fitted.network_.parameters() if p.requires_grad)


def test_activations_grow_with_the_batch_and_shrink_with_checkpointing():
    est = PolySeq2Seq(n_skills=4, backbone=tiny_backbone("llama"), **SETTINGS)
    small, large = est.estimate_memory(10, batch_size=4), est.estimate_memory(10, batch_size=16)
    assert 3.5 < large.activations / small.activations <= 4.0
    checkpointed = est.set_params(gradient_checkpointing=True).estimate_memory(10, batch_size=16)
    assert checkpointed.activations < large.activations
    assert checkpointed.frozen_weights == large.frozen_weights


def test_lower_precision_and_quantization_shrink_the_weights():
    pytest.importorskip("bitsandbytes")
    sizes = {}
    for dtype, quantization in (("float32", None), ("bfloat16", None), ("bfloat16", "int8"), ("bfloat16", "nf4")):
        est = LoRASeq2Seq(backbone=tiny_backbone("llama"), backbone_dtype=dtype, quantization=quantization, **SETTINGS)
        sizes[dtype, quantization] = est.estimate_memory(3).frozen_weights
    assert sizes["float32", None] > sizes["bfloat16", None] > sizes["bfloat16", "int8"] > sizes["bfloat16", "nf4"]


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3"])
def test_bad_counts_are_refused(bad):
    est = LoRASeq2Seq(backbone=tiny_backbone("llama"), **SETTINGS)
    with pytest.raises(ValueError, match="n_tasks must be a positive integer"):
        est.estimate_memory(bad)
    with pytest.raises(ValueError, match="batch_size must be a positive integer or None"):
        est.estimate_memory(3, batch_size=bad)


def test_nothing_is_allocated_for_the_weights():
    est = CPolySeq2Seq(n_shared=2, backbone=tiny_backbone("llama"), **SETTINGS)
    estimate = est.estimate_memory(n_tasks=1000)
    assert not hasattr(est, "network_")  # the estimator itself stays unfitted
    assert estimate.total > 0 and torch.device("meta").type == "meta"
