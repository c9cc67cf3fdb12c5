"""The task context's prediction scopes: every task's factors cached once (``inference``), content routing, the bypass."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch

from .content_routing import ContentRouting

# Most bytes that the skill layers of one model may spend, inside `TaskContext.inference`,
# on the factors of every task (each layer's (T+1) x (d_in + d_out) x rank table).
# Layers past the budget compute their tasks' factors per batch instead.
INFERENCE_CACHE_BYTES = 1 << 30


class InferenceScopeMixin:
    """The scopes of :class:`~skillfit.skills.TaskContext` that prediction opens, and what they cache."""

    @contextmanager
    def inference(self, merge: bool = True, cache_bytes: int = INFERENCE_CACHE_BYTES) -> Iterator[None]:
        """Let skill layers in eval mode without gradients reuse what they derive from their parameters.

        Inside, each layer mixes every task's factors once (``A_t, s B_t`` for all
        tasks, within ``cache_bytes`` for the whole model) and a batch then costs one
        gather and two batched products per layer, whatever its tasks; kernel launches
        no longer grow with the routing arithmetic. With ``merge``, a single-task batch
        runs ``W + s A_t B_t`` as one dense weight, computed once per (layer, task): it
        costs what the bare backbone costs. Nothing is written to the parameters; the
        cache is dropped when the scope ends.

        Merging an update into the weight is LoRA's way to add no inference latency;
        mixing every task's factors once serves Polytropon's per-task routing.

        Parameters
        ----------
        merge : bool, default=True
            Fold a single-task batch's update into the layer's weight.
        cache_bytes : int
            Most bytes the model's layers may spend on every task's factors (1 GiB by
            default); past it, layers mix their batch's tasks per batch.

        Yields
        ------
        None
            The scope; a scope nested in one of the same ``merge`` keeps its cache.

        See Also
        --------
        skillfit.skills.SkillLinear.merged_weight : The weight a single-task batch runs.

        Examples
        --------
        >>> import torch
        >>> from skillfit.skills import SkillConfig, SkillLinear, TaskContext
        >>> _ = torch.manual_seed(0)
        >>> context = TaskContext()
        >>> layer = SkillLinear(torch.nn.Linear(8, 8), SkillConfig(n_tasks=3, n_shared=2), context).eval()
        >>> with torch.no_grad():
        ...     _ = layer.shared_B.normal_()
        >>> x = torch.randn(4, 8)
        >>> with torch.no_grad(), context.tasks([0, 1, 2, 2]):
        ...     plain = layer(x)
        ...     with context.inference():
        ...         cached = layer(x)
        ...         print(context.inference_cache is not None, context.merge)
        True True
        >>> torch.allclose(plain, cached, atol=1e-5), context.inference_cache is None
        (True, True)
        """
        if self.inference_cache is not None and self.merge == merge:
            yield  # nested in a scope of its own kind (a prediction in chunks): keep its cache
            return
        previous = (self.inference_cache, self.merge, self.cache_bytes_left)
        self.inference_cache, self.merge, self.cache_bytes_left = {}, merge, cache_bytes
        try:
            yield
        finally:
            self.inference_cache, self.merge, self.cache_bytes_left = previous

    @contextmanager
    def content_routed(self, routing: ContentRouting) -> Iterator[None]:
        """Route the shared skills of the enclosed forward passes by content, per token.

        Layers with routing prototypes ignore the router and weigh their shared skills
        by each token's states (``skillfit.skills.content_routing.content_weights``,
        after Arrow); exclusive skills still follow each row's task (none for
        task -1). For prediction only: the layers check that no gradient is recorded.
        Layers get their prototypes from
        :meth:`~skillfit.skills.SkillLinear.attach_prototypes` first.

        Parameters
        ----------
        routing : ContentRouting
            ``skillfit.skills.content_routing.ContentRouting``: the skills kept per
            token and head (``top_k``) and the softmax temperature.

        Yields
        ------
        None
            The scope; the previous routing is restored when it ends.

        See Also
        --------
        skillfit.skills.SkillLinear.attach_prototypes : Compute the skills' prototypes.
        skillfit.skills.SkillLinear.content_routing_weights : Each token's weights over the skills.

        Examples
        --------
        >>> import torch
        >>> from skillfit.skills import SkillConfig, SkillLinear, TaskContext
        >>> from skillfit.skills.content_routing import ContentRouting
        >>> _ = torch.manual_seed(0)
        >>> context = TaskContext()
        >>> layer = SkillLinear(torch.nn.Linear(8, 8), SkillConfig(n_tasks=3, n_shared=4), context).eval()
        >>> with torch.no_grad():
        ...     _ = layer.shared_B.normal_()
        >>> layer.attach_prototypes()
        >>> with torch.no_grad(), context.content_routed(ContentRouting(top_k=2)), context.tasks([-1, -1]):
        ...     print(context.content_routing, layer(torch.randn(2, 5, 8)).shape)
        ContentRouting(top_k=2, temperature=1.0) torch.Size([2, 5, 8])
        """
        previous, self.content_routing = self.content_routing, routing
        try:
            yield
        finally:
            self.content_routing = previous

    def _reserve_cache_bytes(self, size: int) -> bool:
        """Take ``size`` bytes of the inference cache budget; False (nothing taken) when they do not fit.
        
        Skill layers call it before they keep every task's mixed factors (Polytropon's
        per-task average of the skills) for the rest of an
        :meth:`~skillfit.skills.TaskContext.inference` scope.
        """
        fits = size <= self.cache_bytes_left
        if fits:
            self.cache_bytes_left -= size
        return fits

    @contextmanager
    def _every_task(self, n_tasks: int, device: torch.device) -> Iterator[torch.Tensor]:
        """Task indices ``-1, 0, ..., n_tasks - 1``: row ``i`` is task ``i - 1``, row 0 the unknown task.
        
        Inside, :meth:`~skillfit.skills.TaskContext.per_task` fills row 0 as the unknown
        task, whatever the batch holds. Skill layers use it to mix every task's factors
        at once (Polytropon's per-task routing) inside
        :meth:`~skillfit.skills.TaskContext.inference`.
        """
        previous, self.has_unknown = self.has_unknown, True
        try:
            yield torch.arange(-1, n_tasks, device=device)
        finally:
            self.has_unknown = previous

    @contextmanager
    def bypass(self) -> Iterator[None]:
        """Run the enclosed forward passes through the bare backbone (skills off).

        Every skill layer returns its base layer's output, ``W0 x`` without LoRA's
        update, as when PEMT embeds task descriptions with the frozen backbone;
        no task ids are needed inside.

        Yields
        ------
        None
            The scope; the previous state is restored when it ends.

        See Also
        --------
        skillfit.skills.TaskContext.tasks : Route the enclosed forward passes by task instead.

        Examples
        --------
        >>> import torch
        >>> from skillfit.skills import SkillConfig, SkillLinear, TaskContext
        >>> context = TaskContext()
        >>> layer = SkillLinear(torch.nn.Linear(8, 8), SkillConfig(n_tasks=3, n_shared=2), context)
        >>> with torch.no_grad():
        ...     _ = layer.shared_B.normal_()
        >>> x = torch.randn(2, 8)
        >>> with context.bypass():
        ...     torch.equal(layer(x), layer.base_layer(x))
        True
        """
        previous, self.bypassed = self.bypassed, True
        try:
            yield
        finally:
            self.bypassed = previous

    def _scope_value(self, key: tuple, make: Callable[[], Any]) -> Any:
        """``make()``, computed once per :meth:`~skillfit.skills.TaskContext.tasks` scope and ``key``.
        
        Generation runs every decoding step in one scope with the same rows, so what a
        layer derives from the rows' tasks (each row's pair of factors, gathered from
        the per-task factors that Polytropon-style routing mixes once per task) is
        derived once per generation, not at every step.
        """
        if key not in self._on_device:
            self._on_device[key] = make()
        return self._on_device[key]
