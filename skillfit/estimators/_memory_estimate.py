"""Peak training memory, predicted before any weight is loaded: ``estimate_memory``.

The estimator's own network is built on PyTorch's meta device (shapes and dtypes, no
memory) from the backbone's configuration, and one training step of a batch of the asked
size runs there. Every tensor autograd saves for the backward pass goes through a
``saved_tensors_hooks`` pack hook, which adds up its bytes (each storage once): that is
the activation memory of this very code path, not a formula about it. Weights, gradients
and AdamW's two moments come from the parameters' sizes and dtypes; quantized linear
layers count as bitsandbytes stores them (4-bit: half a byte per weight plus one float32
scale per block of 64; 8-bit: one byte plus one float32 scale per row).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.base import clone

from .._precision import resolved_dtype
from ..backbones import Backbone, _model_class, load_config, max_positions, resolve_device, used_part

GIB = 1024**3
QUANTIZED_BYTES = {"nf4": lambda n, rows: n / 2 + n / 64 * 4, "fp4": lambda n, rows: n / 2 + n / 64 * 4,
                   "int8": lambda n, rows: n + rows * 4}


@dataclass(frozen=True)
class MemoryEstimate:
    """Predicted peak memory of one training step, in bytes, by part.

    Attributes
    ----------
    frozen_weights : int
        The backbone's weights in their dtype (quantized layers as stored).
    trainable : int
        Skills, routers and heads (float32).
    gradients : int
        One gradient per trainable value.
    optimizer : int
        AdamW's two moments per trainable value.
    activations : int
        What the forward pass keeps for the backward pass.
    transient : int
        The largest tensor the backward pass makes while the activations are still held.
    """

    frozen_weights: int
    trainable: int
    gradients: int
    optimizer: int
    activations: int
    transient: int

    @property
    def total(self) -> int:
        """The predicted peak, in bytes."""
        return self.frozen_weights + self.trainable + self.gradients + self.optimizer + self.activations + self.transient

    def __str__(self) -> str:
        parts = ("frozen_weights", "trainable", "gradients", "optimizer", "activations", "transient")
        lines = [f"{part:>15}: {getattr(self, part) / GIB:8.3f} GiB" for part in parts]
        return "\n".join(lines + [f"{'total':>15}: {self.total / GIB:8.3f} GiB"])


class _SavedBytes:
    """A pack hook adding up the bytes of each storage saved for backward, by checkpointable layer."""

    def __init__(self, frozen: set[int]) -> None:
        self.frozen, self.seen = frozen, set()
        self.layer: int | None = None
        self.by_layer: dict[int | None, int] = {}
        self.largest = 0

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key not in self.seen and key not in self.frozen:
            self.seen.add(key)
            self.by_layer[self.layer] = self.by_layer.get(self.layer, 0) + storage.nbytes()
            self.largest = max(self.largest, storage.nbytes())
        return tensor


def _checkpointable_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [module for module in model.modules() if isinstance(module, GradientCheckpointingLayer)]


def _meta_backbone(estimator: Any, dtype: torch.dtype) -> Backbone:
    """The estimator's backbone built from its configuration on the meta device (no weights read)."""
    from transformers import AutoTokenizer

    source, config = load_config(estimator.backbone, trust_remote_code=estimator.trust_remote_code)
    model_class = _model_class(estimator._backbone_kind, estimator.backbone, config)
    with torch.device("meta"):
        model = model_class.from_config(config, dtype=dtype, trust_remote_code=estimator.trust_remote_code)
    model.requires_grad_(False).eval()
    model, decoder_only = used_part(estimator._backbone_kind, model, config)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=estimator.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    return Backbone(model=model, tokenizer=tokenizer, config=config, decoder_only=decoder_only, source=source,
                    _sha256=lambda: "")


def _encoded(estimator: Any, n_tasks: int, n_labels: int, rows: int, length: int, target_length: int) -> dict:
    """Token ids of ``rows`` texts of ``length`` tokens (and targets), in the layout ``_make_batch`` reads."""
    tasks = np.arange(rows) % n_tasks
    if estimator._backbone_kind == "model":
        return {"input_ids": [[1] * length] * rows, "tasks": tasks, "targets": np.arange(rows) % n_labels}
    if estimator.decoder_only_:  # the model reads prompt + target (+ EOS), within its positions
        return {"input_ids": [[1] * (length + target_length)] * rows, "tasks": tasks,
                "labels": [[-100] * length + [1] * target_length] * rows}
    return {"input_ids": [[1] * length] * rows, "tasks": tasks, "labels": [[1] * target_length] * rows}


def estimate_training_memory(
    estimator: Any, n_tasks: int, *, n_labels: int = 2, batch_size: int | None = None,
    sequence_length: int | None = None, target_length: int | None = None,
) -> MemoryEstimate:
    """See :meth:`SkillEstimatorBase.estimate_memory`."""
    est = clone(estimator)
    est._validate_params()
    device = resolve_device(est.device)
    dtype = resolved_dtype(est.backbone_dtype, device)
    rows = batch_size or est.batch_size
    length = sequence_length or est.max_length
    target = target_length or getattr(est, "max_target_length", 0)
    backbone = _meta_backbone(est, dtype)
    positions = max_positions(backbone.config, backbone.tokenizer)
    if positions is not None:  # fit cuts texts to the backbone's positions too
        length = min(length, positions)
        if est._backbone_kind == "generator" and backbone.decoder_only:
            target = min(target, positions - 1)
            length = max(1, min(length, positions - target))
    est.tasks_, est.device_, est.tokenizer_ = np.arange(n_tasks), torch.device("meta"), backbone.tokenizer
    if est._backbone_kind == "model":
        est.classes_ = np.arange(n_labels)
        targets: Any = np.arange(max(n_tasks, n_labels)) % n_labels
    else:
        targets = ["a"] * max(n_tasks, 1)
    task_index = np.arange(len(targets)) % n_tasks
    est.network_ = est._build_network(backbone, est._skill_config(n_tasks), targets, task_index).to("meta")
    quantized_linears = _quantized_linear_bytes(est)
    frozen = [p for p in est.network_.parameters() if not p.requires_grad]
    trainable = sum(p.numel() * p.element_size() for p in est.network_.parameters() if p.requires_grad)
    frozen_bytes = sum(p.numel() * p.element_size() for p in frozen) + sum(b.numel() * b.element_size()
                                                                           for b in est.network_.buffers())
    frozen_bytes += quantized_linears
    saved = _trace_training_step(est, _encoded(est, n_tasks, n_labels, rows, length, target),
                                 {p.untyped_storage()._cdata for p in est.network_.parameters()})
    return MemoryEstimate(frozen_weights=int(frozen_bytes), trainable=int(trainable), gradients=int(trainable),
                          optimizer=int(2 * trainable), activations=int(saved[0]), transient=int(saved[1]))


def _quantized_linear_bytes(est: Any) -> float:
    """Bytes saved by quantizing the backbone's linear layers (negative), as bitsandbytes stores them."""
    if est.quantization is None:
        return 0.0
    output = getattr(est.network_.backbone, "get_output_embeddings", lambda: None)()
    change = 0.0
    for module in est.network_.backbone.modules():
        if type(module) is torch.nn.Linear and module is not output:  # transformers keeps the LM head unquantized
            n = module.weight.numel()
            change += QUANTIZED_BYTES[est.quantization](n, module.out_features) - n * module.weight.element_size()
    return change


def _trace_training_step(est: Any, encoded: dict, frozen: set[int]) -> tuple[int, int]:
    """``(activations, transient)`` bytes of one forward and backward pass on the meta device."""
    network = est.network_.train()
    layers = _checkpointable_layers(network)
    counter = _SavedBytes(frozen)
    hooks, layer_input_bytes = [], []

    def entering(index: int, args: tuple) -> None:
        counter.layer = index
        if not layer_input_bytes and args and isinstance(args[0], torch.Tensor):  # what a checkpointed layer keeps
            layer_input_bytes.append(args[0].numel() * args[0].element_size())

    for index, layer in enumerate(layers):
        hooks.append(layer.register_forward_pre_hook(lambda module, args, i=index: entering(i, args)))
        hooks.append(layer.register_forward_hook(lambda module, args, out: setattr(counter, "layer", None)))
    est.device_ = torch.device("cpu")  # the batch is made with values, then all but what code reads moves to meta
    batch = est._make_batch(np.arange(len(encoded["tasks"])), encoded)
    est.device_ = torch.device("meta")
    # The context reads the tasks, a decoder-only model the answer lengths, skillfit's pooling and positions
    # the mask: those values stay on the CPU.
    on_cpu = ("tasks", "attention_mask") + (("labels",) if getattr(est, "decoder_only_", False) else ())
    batch = {key: value if key in on_cpu else value.to("meta") for key, value in batch.items()}
    from transformers import PreTrainedModel, masking_utils

    # transformers skips building a mask when every row is full length, which it checks by the mask's
    # values; on the meta device there are none. Every row of this batch is full length: the backbone
    # gets no mask (what full rows mean), and a mask it makes itself (BART's decoder) counts as full.
    for module in network.modules():
        if isinstance(module, PreTrainedModel):
            hooks.append(module.register_forward_pre_hook(
                lambda module, args, kwargs: (args, {**kwargs, "attention_mask": None}), with_kwargs=True))
            module.warn_if_padding_and_no_attention_mask = lambda *args, **kwargs: None  # it reads the ids' values
    reads_values = masking_utils.fast_all
    masking_utils.fast_all = lambda tensor: True if tensor.device.type == "meta" else reads_values(tensor)
    try:
        with torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda tensor: tensor):
            loss = est._batch_loss(batch)
        loss.backward()
    finally:
        masking_utils.fast_all = reads_values
        for hook in hooks:
            hook.remove()
    in_layers = [bytes_ for layer, bytes_ in counter.by_layer.items() if layer is not None]
    outside = counter.by_layer.get(None, 0)
    if est.gradient_checkpointing and in_layers:
        # Each layer keeps only its input; its activations come back one layer at a time in backward.
        boundary = layer_input_bytes[0] if layer_input_bytes else 0
        return outside + boundary * len(layers) + max(in_layers), counter.largest
    return outside + sum(in_layers), counter.largest


class MemoryEstimateMixin:
    """The ``estimate_memory`` method of the estimators."""

    def estimate_memory(
        self, n_tasks: int, *, n_labels: int = 2, batch_size: int | None = None, sequence_length: int | None = None,
        target_length: int | None = None,
    ) -> MemoryEstimate:
        """Predict the peak memory of one training step of this estimator, before loading any weight.

        The network is built on PyTorch's meta device from the backbone's configuration
        alone, and one training step of the asked batch runs there: the activations are
        those this code path saves for the backward pass (with ``gradient_checkpointing``
        too), the weights those of ``backbone_dtype`` and ``quantization`` (as
        bitsandbytes stores 4-bit and 8-bit layers [1]_), and the optimizer AdamW's two
        moments [2]_. ``backbone_dtype="auto"`` resolves for this machine's device.

        Parameters
        ----------
        n_tasks : int
            Tasks of the fit (they size the exclusive skills and the routers).
        n_labels : int, default=2
            Labels of a classifier (its head); ignored by text-to-text estimators.
        batch_size : int, optional
            Rows per step; the estimator's ``batch_size`` by default.
        sequence_length : int, optional
            Tokens per input row; ``max_length`` by default (rows padded to it).
        target_length : int, optional
            Target tokens per row of a text-to-text estimator; ``max_target_length`` by
            default (a decoder-only model reads them after the ``sequence_length`` prompt
            tokens).

        Returns
        -------
        MemoryEstimate
            Bytes by part (``frozen_weights``, ``trainable``, ``gradients``,
            ``optimizer``, ``activations``, ``transient``) and their ``total``;
            ``print`` shows them in GiB. ``docs/benchmarks.md`` compares it with
            measured peaks.

        See Also
        --------
        skillfit.backbones.backbone_cache_info : The backbones this process holds.

        References
        ----------
        .. [1] Dettmers, Pagnoni, Holtzman, Zettlemoyer. "QLoRA: Efficient Finetuning of
           Quantized LLMs." NeurIPS 2023 (arXiv:2305.14314).
        .. [2] Loshchilov, Hutter. "Decoupled Weight Decay Regularization." ICLR 2019
           (arXiv:1711.05101).

        Examples
        --------
        >>> from skillfit import CPolySeq2Seq
        >>> from skillfit.datasets import make_tiny_backbone
        >>> est = CPolySeq2Seq(n_shared=4, backbone=make_tiny_backbone("llama"), batch_size=8, max_length=64)
        >>> estimate = est.estimate_memory(n_tasks=100)
        >>> estimate.optimizer == 2 * estimate.trainable
        True
        >>> estimate.total > estimate.frozen_weights > 0
        True
        """
        if isinstance(n_tasks, bool) or not isinstance(n_tasks, (int, np.integer)) or n_tasks < 1:
            raise ValueError(f"n_tasks must be a positive integer; got {n_tasks!r}.")
        for name, value in (("n_labels", n_labels), ("batch_size", batch_size), ("sequence_length", sequence_length),
                            ("target_length", target_length)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None; got {value!r}.")
        return estimate_training_memory(self, int(n_tasks), n_labels=int(n_labels), batch_size=batch_size,
                                        sequence_length=sequence_length, target_length=target_length)
