"""Carrying per-example task ids to every skill layer without threading kwargs.

All skill layers of one model share a :class:`TaskContext`. The caller sets the task
ids of the batch once (``with context.tasks(task_ids): model(...)``); each layer reads
them in its forward. The distinct tasks of the batch and each example's index into them
are computed once, on the host, so the forward pass never syncs with the device.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Union

import torch

from .content_routing import ContentRouting

# What a task-wise computation returns: one tensor or several, each with one row per task.
PerTask = Union[torch.Tensor, tuple[torch.Tensor, ...]]

# Most bytes that the skill layers of one model may spend, inside `TaskContext.inference`,
# on the factors of every task (each layer's (T+1) x (d_in + d_out) x rank table).
# Layers past the budget compute their tasks' factors per batch instead.
INFERENCE_CACHE_BYTES = 1 << 30


class TaskContext:
    """The task ids of the batch that the model is processing now.

    Attributes
    ----------
    has_unknown : bool
        Whether the current batch holds task index -1 (a task unseen in training).
        Read by :meth:`per_task` only: nothing else handles the unknown task.
    task_descriptions : Tensor or None
        Task-description vectors ``(n_tasks, dim)`` read by gate routers (PEMT); owned
        and registered by the model that sets it.
    inference_cache : dict or None
        Inside :meth:`inference`: what skill layers derive from their parameters once
        per scope (every task's factors, merged weights), dropped when the scope ends.
    merge : bool
        Inside :meth:`inference`: whether a single-task batch runs one merged weight.
    content_routing : ContentRouting or None
        Inside :meth:`content_routed`: skill layers with routing prototypes weigh their
        shared skills per token by content instead of by task.

    Training noise (the routers' relaxed-Bernoulli samples) is drawn by
    :meth:`uniform_noise`: once per router and outermost :meth:`tasks` scope (one
    training step), for the router's
    whole table, so a forward pass that runs again in backward (gradient
    checkpointing) sees the same sample, and so does every rank of a data-parallel
    fit, whatever share of the batch it holds.
    """

    # Class-level defaults: contexts pickled before these existed still load.
    _noise: dict | None = None
    _noise_seed: int | None = None
    _noise_generator: torch.Generator | None = None
    content_routing: ContentRouting | None = None

    def __init__(self) -> None:
        self.bypassed = False
        self.has_unknown = False
        self.task_descriptions: torch.Tensor | None = None
        self.inference_cache: dict | None = None
        self.merge = False
        self.content_routing: ContentRouting | None = None
        self.cache_bytes_left = 0
        self._batch_tasks: torch.Tensor | None = None
        self._example_group: torch.Tensor | None = None
        self._task_counts: list[int] | None = None
        # (device, batch size) -> (batch tasks, example group) already on that device.
        self._on_device: dict[tuple[torch.device, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self._noise: dict[int, torch.Tensor] | None = None
        self._noise_seed: int | None = None
        self._noise_generator: torch.Generator | None = None

    @contextmanager
    def tasks(self, task_ids: torch.Tensor | list[int], noise_seed: int | None = None) -> Iterator[None]:
        """Route the examples of the enclosed forward passes to ``task_ids``.

        Parameters
        ----------
        task_ids : tensor or list of int, shape (batch,)
            Task index of each example, -1 for a task unseen in training. Best given
            as a CPU tensor: grouping happens on the host, and the results are moved
            to the device once per call.
        noise_seed : int, optional
            Seed of the training noise drawn inside (see :meth:`uniform_noise`). By
            default, a scope inside another shares that scope's noise, and an
            outermost scope draws from torch's global generator.
        """
        task_ids = torch.as_tensor(task_ids, dtype=torch.long).cpu()
        if task_ids.ndim != 1:
            raise ValueError(f"task_ids must be one-dimensional, got shape {tuple(task_ids.shape)}.")
        previous = (self._batch_tasks, self._example_group, self._task_counts, self._on_device, self.has_unknown,
                    self._noise, self._noise_seed, self._noise_generator)
        if noise_seed is not None or self._noise is None:
            self._noise, self._noise_seed, self._noise_generator = {}, noise_seed, None
        # else: a scope inside another (the network's, inside the training step's) shares its noise
        self._batch_tasks, self._example_group, counts = torch.unique(task_ids, return_inverse=True, return_counts=True)
        # Rows sorted by task make contiguous segments: each task's rows are then one slice.
        contiguous = bool((self._example_group[1:] >= self._example_group[:-1]).all())
        self._task_counts = counts.tolist() if contiguous else None
        self._on_device = {}
        self.has_unknown = bool(len(self._batch_tasks)) and int(self._batch_tasks[0]) < 0
        try:
            yield
        finally:
            (self._batch_tasks, self._example_group, self._task_counts, self._on_device, self.has_unknown,
             self._noise, self._noise_seed, self._noise_generator) = previous

    def uniform_noise(self, owner: torch.nn.Module, shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
        """Uniform [0, 1) noise of ``shape`` for ``owner``, drawn once per :meth:`tasks` scope.

        Owners draw for their whole per-task table and index the batch's rows, so the
        sample of a task does not depend on which other tasks share the batch. With the
        scope's ``noise_seed``, the owners draw in turn from one generator so seeded.
        """
        if self._noise is None:  # outside a tasks() scope
            return torch.rand(shape, device=like.device, dtype=like.dtype)
        key = id(owner)
        if key not in self._noise:
            if self._noise_seed is not None and self._noise_generator is None:
                self._noise_generator = torch.Generator(device=like.device).manual_seed(self._noise_seed)
            self._noise[key] = torch.rand(shape, generator=self._noise_generator, device=like.device, dtype=like.dtype)
        return self._noise[key]

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

        Parameters
        ----------
        merge : bool, default=True
            Fold a single-task batch's update into the layer's weight.
        cache_bytes : int
            Most bytes the model's layers may spend on every task's factors.
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
        by each token's states (:func:`~skillfit.skills.content_routing.content_weights`);
        exclusive skills still follow each row's task (none for task -1). For
        prediction only: the layers check that no gradient is recorded.
        """
        previous, self.content_routing = self.content_routing, routing
        try:
            yield
        finally:
            self.content_routing = previous

    def reserve_cache_bytes(self, size: int) -> bool:
        """Take ``size`` bytes of the inference cache budget; False (nothing taken) when they do not fit."""
        fits = size <= self.cache_bytes_left
        if fits:
            self.cache_bytes_left -= size
        return fits

    @contextmanager
    def every_task(self, n_tasks: int, device: torch.device) -> Iterator[torch.Tensor]:
        """Task indices ``-1, 0, ..., n_tasks - 1``: row ``i`` is task ``i - 1``, row 0 the unknown task.

        Inside, :meth:`per_task` fills row 0 as the unknown task, whatever the batch holds.
        """
        previous, self.has_unknown = self.has_unknown, True
        try:
            yield torch.arange(-1, n_tasks, device=device)
        finally:
            self.has_unknown = previous

    def per_task(
        self,
        tasks: torch.Tensor,
        known: Callable[[torch.Tensor], PerTask],
        unknown: bool | float | Callable[[], PerTask],
    ) -> PerTask:
        """Evaluate a task-wise lookup, with the rows of the unknown task (-1) filled by ``unknown``.

        This is the one place where the unknown task is handled: routers, exclusive
        skills and heads describe what a known task gets and what an unknown one gets,
        and never test for task -1 themselves.

        Parameters
        ----------
        tasks : LongTensor of shape (U,)
            Task indices, -1 for a task unseen in training.
        known : callable
            Maps task indices (all >= 0) to a tensor, or a tuple of tensors, whose
            first dimension is ``U``.
        unknown : bool, float or callable
            What the rows of task -1 hold: a scalar (cast to the dtype of ``known``'s
            result), or a function of no argument returning tensors that broadcast
            over the trailing dimensions of ``known``'s, evaluated only when the batch
            holds the unknown task. A tuple result is filled element-wise.

        Returns
        -------
        Tensor or tuple of Tensor
            ``known(tasks)`` when the batch holds no unknown task (read from the host
            flag :attr:`has_unknown`: no device sync); otherwise
            ``known(tasks.clamp_min(0))`` with the rows of task -1 replaced.
        """
        if not self.has_unknown:
            return known(tasks)
        is_unknown = tasks < 0
        values = known(tasks.clamp_min(0))  # task -1 reads row 0 as a placeholder, replaced below
        fill = unknown() if callable(unknown) else unknown
        if not isinstance(values, tuple):
            return _fill_rows(values, is_unknown, fill)
        fills = fill if isinstance(fill, tuple) else (fill,) * len(values)
        return tuple(_fill_rows(value, is_unknown, part) for value, part in zip(values, fills))

    def host_tasks(self) -> list[int]:
        """The distinct task indices of the batch, read from the host copy (no device sync)."""
        return self._batch_tasks.tolist()

    def segments(self, batch_size: int) -> list[tuple[int, int]] | None:
        """Row ranges ``[(start, end), ...]`` of each distinct task, if the rows are sorted by task.

        None when the rows are not grouped by task. Computed on the host: no device sync.
        """
        if self._task_counts is None or self._example_group is None:
            return None
        repeat = batch_size // max(1, len(self._example_group))
        bounds, start = [], 0
        for count in self._task_counts:
            bounds.append((start, start + count * repeat))
            start += count * repeat
        return bounds

    @contextmanager
    def bypass(self) -> Iterator[None]:
        """Run the enclosed forward passes through the bare backbone (skills off)."""
        previous, self.bypassed = self.bypassed, True
        try:
            yield
        finally:
            self.bypassed = previous

    def groups(self, batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The distinct tasks of the batch and, per row, the index of its task among them.

        ``batch_size`` may be a multiple of the number of task ids: generation with
        beam search or several samples repeats each example consecutively, and each
        copy keeps its example's task.
        """
        key = (device, batch_size)
        if key not in self._on_device:
            self._check_batch(batch_size)
            example_group = self._example_group.repeat_interleave(batch_size // len(self._example_group))
            self._on_device[key] = (
                self._batch_tasks.to(device, non_blocking=True),
                example_group.to(device, non_blocking=True),
            )
        return self._on_device[key]

    def row_tasks(self, batch_size: int, device: torch.device) -> torch.Tensor:
        """Each row's task index plus one (0: the unknown task), the row order of :meth:`every_task`."""
        key = (device, batch_size, "rows")
        if key not in self._on_device:
            self._check_batch(batch_size)
            rows = (self._batch_tasks + 1).index_select(0, self._example_group)
            self._on_device[key] = rows.repeat_interleave(batch_size // len(rows)).to(device, non_blocking=True)
        return self._on_device[key]

    def _check_batch(self, batch_size: int) -> None:
        if self._example_group is None:
            raise RuntimeError(
                "A skill layer ran without task ids. Wrap the forward pass in "
                "`with context.tasks(task_ids): ...` (the estimators do this for you)."
            )
        if batch_size % len(self._example_group):
            raise RuntimeError(
                f"A skill layer got a batch of {batch_size} rows for {len(self._example_group)} task ids; "
                "the batch size must be a multiple of the number of task ids."
            )


def _fill_rows(values: torch.Tensor, rows: torch.Tensor, fill: float | torch.Tensor) -> torch.Tensor:
    """``values`` with the rows where ``rows`` is True replaced by ``fill``, broadcast over trailing dims."""
    if not isinstance(fill, torch.Tensor):
        # A number takes the dtype of the values: a boolean mask stays boolean.
        fill = torch.tensor(fill, dtype=values.dtype, device=values.device)
    return torch.where(rows.view(-1, *([1] * (values.ndim - 1))), fill, values)
