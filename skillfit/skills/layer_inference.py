"""A skill layer's prediction paths: every task's factors mixed once per scope, and merged weights."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .routing import UniformRouter
from .low_rank import autocast_dtype


class InferencePathsMixin:
    """The cached and merged inference paths of :class:`~skillfit.skills.SkillLinear`."""

    def merged_weight(self, task: torch.Tensor) -> torch.Tensor:
        """The base weight with one task's update folded in, in the base layer's own layout.

        For prediction on a single task: like merging a LoRA into its layer, the
        merged weight costs what the base layer costs. The base layer is not changed.

        Parameters
        ----------
        task : LongTensor of shape (1,)
            The task index (-1: an unknown task, set through ``context.tasks(...)``).

        Returns
        -------
        Tensor
            ``W0`` plus the task's update, shaped as the base layer's weight:
            ``(d_out, d_in)`` for ``nn.Linear``, ``(d_in, d_out)`` for ``Conv1D``.

        See Also
        --------
        skillfit.skills.SkillLinear.delta_weight : The update that is folded in.
        skillfit.skills.TaskContext.inference : The scope in which single-task batches run merged.

        Examples
        --------
        >>> import torch
        >>> from skillfit.skills import SkillConfig, SkillLinear, TaskContext
        >>> _ = torch.manual_seed(0)
        >>> context = TaskContext()
        >>> layer = SkillLinear(torch.nn.Linear(8, 4), SkillConfig(n_tasks=3, n_shared=2), context).eval()
        >>> with torch.no_grad():
        ...     _ = layer.shared_B.normal_()
        >>> weight = layer.merged_weight(torch.tensor([1]))
        >>> weight.shape
        torch.Size([4, 8])
        >>> x = torch.randn(2, 8)
        >>> with context.tasks([1, 1]):
        ...     torch.allclose(layer(x), torch.nn.functional.linear(x, weight, layer.bias), atol=1e-5)
        True
        """
        return self._fold(self.delta_weight(task)[0])

    @property
    def can_merge(self) -> bool:
        """Whether an update can be folded into the base weight: not when it is quantized (bitsandbytes).

        Folding into 4-bit or 8-bit weights would mean dequantize, add, requantize:
        the update, small against the weight, would be rounded into the quantization
        error. Such layers always add the update to the base layer's output instead.

        See Also
        --------
        skillfit.skills.SkillLinear.merged_weight : The weight with one task's update folded in.

        Examples
        --------
        >>> import torch
        >>> from skillfit.skills import SkillConfig, SkillLinear, TaskContext
        >>> SkillLinear(torch.nn.Linear(8, 4), SkillConfig(n_tasks=2, n_shared=2), TaskContext()).can_merge
        True
        """
        return self.base_layer.weight.is_floating_point()

    def _fold(self, update: torch.Tensor) -> torch.Tensor:
        """``W + update`` for an ``x @ W``-oriented update ``(d_in, d_out)``, in the base layer's layout."""
        if not self.can_merge:
            raise ValueError(
                f"The base layer ({type(self.base_layer).__name__}) holds quantized weights; an update cannot be "
                "folded into them without rounding it away. Use the layer's forward pass, which adds the update "
                "to the base output."
            )
        weight = self.base_layer.weight
        if isinstance(self.base_layer, nn.Linear):
            update = update.T
        return weight + update.to(weight.dtype)

    def _every_task_factors(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(A, s B)`` of every task, rows ``-1 .. T-1`` (see ``TaskContext._every_task``), once per inference scope."""
        context, key = self.context, (id(self), "factors")
        if key not in context.inference_cache:
            with context._every_task(self.config.n_tasks, device) as tasks:
                terms = self.task_products(tasks)
            A = torch.cat([A for A, _, _ in terms], dim=-1)
            B = torch.cat([scale * B for _, B, scale in terms], dim=-2)
            fits = context._reserve_cache_bytes(A.numel() * A.element_size() + B.numel() * B.element_size())
            context.inference_cache[key] = (A, B) if fits else None
        return context.inference_cache[key]

    def _cached_forward(self, x: torch.Tensor, factors: tuple[torch.Tensor, torch.Tensor], *args, **kwargs) -> torch.Tensor:
        context = self.context
        A, B = factors
        if context.merge and self.can_merge and (len(context._host_tasks()) == 1 or self._same_update_for_every_task):
            # One update for the whole batch: fold it into the weight (a shared LoRA's is every task's).
            row = context._host_tasks()[0] + 1
            return self._merged_forward(x, lambda: self._fold(A[row] @ B[row]))
        result = self.base_layer(x, *args, **kwargs)
        rows = x.reshape(x.shape[0], -1, self.in_features)
        dtype = autocast_dtype(x.device)
        if dtype is not None:  # cast the tables once per scope, not the gathered rows per batch
            A, B = self._autocast_factors(dtype, A, B)
        else:
            rows = rows.to(A.dtype)
        # Each row's pair, gathered once per task scope: every decoding step of a generation reuses it.
        A_rows, B_rows = context._scope_value((id(self), x.shape[0], x.device, A.dtype), lambda: self._row_factors(x, A, B))
        update = torch.bmm(torch.bmm(rows, A_rows), B_rows)
        return result + update.reshape(result.shape).to(result.dtype)

    def _row_factors(self, x: torch.Tensor, A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        index = self.context._row_tasks(x.shape[0], x.device)
        return A.index_select(0, index), B.index_select(0, index)

    def _autocast_factors(self, dtype: torch.dtype, A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The factors in autocast's ``dtype``, cast once per scope within the cache budget (else as they are)."""
        context, key = self.context, (id(self), "factors", dtype)
        if key not in context.inference_cache:
            fits = context._reserve_cache_bytes((A.numel() + B.numel()) * dtype.itemsize)
            context.inference_cache[key] = (A.to(dtype), B.to(dtype)) if fits else (A, B)
        return context.inference_cache[key]

    @property
    def _same_update_for_every_task(self) -> bool:
        """Whether every task (the unknown one too) gets the same update: no exclusive skills, no routing."""
        return self.exclusive_A is None and (self.router is None or isinstance(self.router, UniformRouter))

    def _merged_forward(self, x: torch.Tensor, merged: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The forward pass with the batch's single task folded into one weight, made by ``merged`` once per scope."""
        cache = self.context.inference_cache
        task = "every task" if self._same_update_for_every_task else self.context._host_tasks()[0]
        key = (id(self), "merged", task)
        weight = cache.get(key)
        if weight is None:
            weight = cache[key] = merged()
        bias = self.base_layer.bias
        if isinstance(self.base_layer, nn.Linear):
            return nn.functional.linear(x, weight, bias)
        # transformers' Conv1D: weight is (in, out).
        out = x.reshape(-1, self.in_features) @ weight
        if bias is not None:
            out = out + bias
        return out.reshape(*x.shape[:-1], self.out_features)
