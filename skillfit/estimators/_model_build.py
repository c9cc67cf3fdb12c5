"""The network an estimator trains: the backbone loaded and configured, the skills injected, text lengths."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch


from .._warnings import warn_user
from ..backbones import load_backbone_of_kind, max_positions, resolve_device
from ._training.distributed import rank_device
from .._precision import chosen_dtype, dtype_name


class ModelBuildMixin:
    """Building the network: backbone, skills, lengths, checkpointing, compilation."""

    def _build_model(self, targets: Any, task_index: np.ndarray) -> None:
        """Load the backbone, put the method's skills into it and build the network on ``device_``."""
        self.device_ = rank_device(resolve_device(self.device))
        dtype = chosen_dtype(self.backbone_dtype, self.device_)
        backbone = load_backbone_of_kind(
            self._backbone_kind, self.backbone, self.device_, trust_remote_code=self.trust_remote_code, dtype=dtype,
            quantization=self.quantization,
        )
        self._backbone_reference = {"name": self.backbone, "revision": backbone.revision,
                                    "sha256": backbone.weights_sha256(), "dtype": dtype_name(dtype)}
        if self.quantization is not None:
            self._backbone_reference["quantization"] = self.quantization
        self.tokenizer_ = backbone.tokenizer
        skill_config = self._skill_config(len(self.tasks_))
        self.network_ = self._build_network(backbone, skill_config, targets, task_index).to(self.device_)
        self.n_trainable_params_ = sum(p.numel() for p in self.network_.parameters() if p.requires_grad)
        self._configure_backbone(self.network_.backbone)
        positions = self._text_positions()
        if positions is not None and self.max_length > positions:
            warn_user(
                f"max_length={self.max_length} is more than the {positions} positions of the backbone "
                f"{self.backbone!r}; texts are cut to {positions} tokens. Set max_length<={positions} "
                "to silence this.",
                UserWarning,  # the caller of fit (through the concurrency guard)
            )

    def _text_positions(self) -> int | None:
        """The most text tokens one sequence holds (None: no fixed limit).

        The backbone's positions, less PEMT's soft-prompt token, which goes in front of the text.
        """
        config = getattr(self.network_.backbone, "config", None)  # a peer's wrapped backbone may have none
        positions = None if config is None else max_positions(config, self.tokenizer_)
        if positions is not None and getattr(self.network_, "task_descriptions", None) is not None:
            positions -= 1
        return positions

    def _length_limit(self, reserved: int = 0) -> int:
        """Most tokens of a text: ``max_length``, and no more than the backbone's positions less ``reserved``.

        ``reserved`` keeps room for what follows the text in the same sequence (a
        decoder-only model's target or generated tokens).
        """
        positions = self._text_positions()
        if positions is None:
            return self.max_length
        if positions - reserved < 1:
            raise ValueError(
                f"The backbone {self.backbone!r} reads {positions} tokens, which leaves no room for a text "
                f"before the {reserved} target or generated tokens; lower max_target_length or max_new_tokens."
            )
        return min(self.max_length, positions - reserved)

    def _configure_backbone(self, model: torch.nn.Module) -> None:
        """Turn on gradient checkpointing in the backbone when asked (it acts in training mode only)."""
        if not self.gradient_checkpointing:
            return
        if not getattr(model, "supports_gradient_checkpointing", False):
            raise ValueError(
                f"gradient_checkpointing=True, but {type(model).__name__} does not support gradient "
                "checkpointing; set gradient_checkpointing=False."
            )
        # Non-reentrant checkpointing needs no input that requires grad (the backbone is frozen).
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    @contextmanager
    def _compiled_for_training(self) -> Iterator[None]:
        """With ``torch_compile``, the backbone runs through ``torch.compile`` while training.

        Prediction stays eager (merged weights make it as cheap as the bare backbone),
        and nothing compiled is kept on the estimator, so pickling is unaffected.
        """
        if not self.torch_compile:
            yield
            return
        backbone = self.network_.backbone
        backbone.compile(dynamic=True)
        try:
            yield
        finally:
            backbone._compiled_call_impl = None
