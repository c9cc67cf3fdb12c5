"""Low-rank products of a skill layer: the batched per-row update, its dtype, and a layer's feature sizes."""

from __future__ import annotations

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D


# Most distinct tasks of a batch for which one product per task slice beats one gathered
# bmm, by device type (measured on 2 CPU threads, MiniLM widths: 4 tasks; docs/benchmarks.md).
# Elsewhere (CUDA) each slice is a kernel launch, so only a single-task batch runs unsliced.
SLICED_TASKS_LIMIT = {"cpu": 4}


def linear_features(layer: nn.Module) -> tuple[int, int]:
    """``(in_features, out_features)`` of an ``nn.Linear`` or a transformers ``Conv1D``.

    GPT-2 style models in Hugging Face Transformers [2]_ use ``Conv1D``, whose weight is
    stored ``(in, out)``, the transpose of ``nn.Linear``'s; both are the dense layers
    that LoRA adapts [1]_.

    Parameters
    ----------
    layer : nn.Module
        An ``nn.Linear`` or a ``transformers.pytorch_utils.Conv1D``.

    Returns
    -------
    tuple of (int, int)
        The input and output widths of ``layer``.

    Raises
    ------
    TypeError
        If ``layer`` is neither kind of layer.

    See Also
    --------
    skillfit.skills.SkillLinear : The skill layer that wraps such a layer.
    skillfit.skills.target_layer_names : Find the layers of a model to wrap.

    References
    ----------
    .. [1] Hu, Shen, Wallis, Allen-Zhu, Li, Wang, Wang, Chen. "LoRA: Low-Rank Adaptation of
       Large Language Models." ICLR 2022 (arXiv:2106.09685).
    .. [2] Wolf et al. "Transformers: State-of-the-Art Natural Language Processing."
       EMNLP 2020 System Demonstrations (arXiv:1910.03771).

    Examples
    --------
    >>> import torch
    >>> from transformers.pytorch_utils import Conv1D
    >>> from skillfit.skills import linear_features
    >>> linear_features(torch.nn.Linear(8, 4))
    (8, 4)
    >>> linear_features(Conv1D(4, 8))   # Conv1D(nf=out, nx=in)
    (8, 4)
    >>> linear_features(torch.nn.Conv2d(1, 1, 3))
    Traceback (most recent call last):
    ...
    TypeError: Skills can only wrap nn.Linear or transformers' Conv1D layers, got Conv2d.
    """
    if isinstance(layer, nn.Linear):
        return layer.in_features, layer.out_features
    if isinstance(layer, Conv1D):
        return layer.weight.shape[0], layer.weight.shape[1]
    raise TypeError(
        f"Skills can only wrap nn.Linear or transformers' Conv1D layers, got {type(layer).__name__}."
    )


def sliced_tasks_limit(device: torch.device) -> int:
    """Most distinct tasks a batch may hold for per-task slices to be used on ``device``."""
    return SLICED_TASKS_LIMIT.get(device.type, 1)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype autocast computes in on ``device``'s type; None when autocast is off (or the device has none: meta)."""
    if device.type == "meta":
        return None
    try:
        return torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
    except (TypeError, AttributeError):  # torch < 2.4: no device-type arguments
        if device.type == "cpu":
            return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
        return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None


def low_rank_update(
    rows: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    example_group: torch.Tensor,
    segments: list[tuple[int, int]] | None,
) -> torch.Tensor:
    """``x A_t B_t`` for every row, with ``t`` the row's task.

    Parameters
    ----------
    rows : Tensor of shape (N, L, d_in)
    A, B : Tensors of shape (U, d_in, r) and (U, r, d_out)
        Each distinct task's factors.
    example_group : LongTensor of shape (N,)
        Each row's index into the ``U`` tasks, on the rows' device.
    segments : list of (start, end) or None
        Each task's row range when rows are sorted by task: one product per slice
        (no copies). None: one batched product whose cost does not grow with ``U``,
        each row gathering its task's pair.
    """
    if segments is None:
        return torch.bmm(torch.bmm(rows, A.index_select(0, example_group)), B.index_select(0, example_group))
    parts = [(rows[start:end] @ A[u]) @ B[u] for u, (start, end) in enumerate(segments)]
    return parts[0] if len(parts) == 1 else torch.cat(parts)
