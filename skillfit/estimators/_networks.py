"""Torch modules the estimators train: a skilled backbone plus a task-masked head.

Pure torch, no scikit-learn: the estimators build these and run them.
"""

from __future__ import annotations

import torch
from torch import nn

from ..skills import TaskContext

POOLINGS = ("mean", "last", "first")


def pool_hidden_states(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Reduce ``(batch, seq, dim)`` hidden states to ``(batch, dim)``.

    ``"mean"`` averages the unpadded tokens, ``"first"`` takes the first token (CLS),
    ``"last"`` takes the last unpadded token, whatever the padding side.
    """
    if pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
    if pooling == "first":
        return hidden[:, 0]
    if pooling == "last":
        positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        last = (positions * attention_mask).argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}.")


class SkilledClassifierNetwork(nn.Module):
    """A backbone with skills, pooling and one head over the union of labels.

    Each task only scores the labels it was trained with: the other logits are set to
    ``-inf``, so their probabilities are exactly zero (DESIGN.md §2).

    Parameters
    ----------
    backbone : nn.Module
        Transformer with skill layers, returning ``last_hidden_state``.
    context : TaskContext
        The task-id holder of the backbone's skill layers.
    hidden_size : int
        Width of the backbone's hidden states.
    label_mask : BoolTensor of shape (n_tasks, n_classes)
        ``label_mask[t, c]`` is True when task ``t`` may predict class ``c``.
    pooling : {"mean", "last", "first"}
        How to reduce token states to one vector per text.
    """

    def __init__(
        self, backbone: nn.Module, context: TaskContext, hidden_size: int, label_mask: torch.Tensor, pooling: str
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.context = context
        self.pooling = pooling
        self.head = nn.Linear(hidden_size, label_mask.shape[1])
        self.register_buffer("label_mask", label_mask.clone())

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        """Masked logits of shape ``(batch, n_classes)``; ``tasks`` is a CPU LongTensor."""
        with self.context.tasks(tasks):
            hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = pool_hidden_states(hidden, attention_mask, self.pooling)
        logits = self.head(pooled).float()
        allowed = self.label_mask[tasks.to(logits.device, non_blocking=True)]
        return logits.masked_fill(~allowed, float("-inf"))
