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

from .._warnings import warn_user
from .inference_scope import INFERENCE_CACHE_BYTES as INFERENCE_CACHE_BYTES, InferenceScopeMixin
from .routing_noise import RoutingNoiseMixin
from .scope_state import HasPerThreadState, PerThread

# What a task-wise computation returns: one tensor or several, each with one row per task.
PerTask = Union[torch.Tensor, tuple[torch.Tensor, ...]]
# Plumbing of the skill layers that was public before 0.2: the old names still answer, with a warning.
RENAMED_PLUMBING = {name: f"_{name}" for name in (
    "host_tasks", "segments", "groups", "row_tasks", "reserve_cache_bytes", "every_task", "scope_value")}


class TaskContext(InferenceScopeMixin, RoutingNoiseMixin, HasPerThreadState):
    """The task ids of the batch that the model is processing now.

    All skill layers of one model share one context, which
    :func:`~skillfit.skills.inject_skills` creates and returns. Polytropon routes by
    task [1]_: the caller sets the batch's task ids once, and every layer mixes its
    skills for the distinct tasks of the batch. Scopes belong to the thread that opens
    them: several threads may run forward passes of one model at once, each with its
    own task ids and caches.

    Attributes
    ----------
    has_unknown : bool
        Whether the current batch holds task index -1 (a task unseen in training).
        Read by :meth:`~skillfit.skills.TaskContext.per_task` only: nothing else
        handles the unknown task.
    task_descriptions : Tensor or None
        Task-description vectors ``(n_tasks, dim)`` read by gate routers (PEMT); owned
        and registered by the model that sets it.
    inference_cache : dict or None
        Inside :meth:`~skillfit.skills.TaskContext.inference`: what skill layers derive
        from their parameters once per scope (every task's factors, merged weights),
        dropped when the scope ends.
    merge : bool
        Inside :meth:`~skillfit.skills.TaskContext.inference`: whether a single-task
        batch runs one merged weight.
    content_routing : ContentRouting or None
        Inside :meth:`~skillfit.skills.TaskContext.content_routed`: skill layers with
        routing prototypes weigh their shared skills per token by content instead of
        by task.

    See Also
    --------
    skillfit.skills.inject_skills : Creates the context shared by a model's skill layers.
    skillfit.skills.TaskContext.tasks : Set the task ids of the enclosed forward passes.
    skillfit.skills.SkillLinear : The layers that read the context.

    Notes
    -----
    Training noise (the routers' relaxed-Bernoulli samples [1]_) is drawn by
    :meth:`~skillfit.skills.TaskContext.uniform_noise`: once per router and outermost
    :meth:`~skillfit.skills.TaskContext.tasks` scope (one training step), for the
    router's whole table, so a forward pass that runs again in backward (gradient
    checkpointing [2]_) sees the same sample, and so does every rank of a
    data-parallel fit, whatever share of the batch it holds.

    References
    ----------
    .. [1] Ponti, Sordoni, Bengio, Reddy. "Combining Parameter-efficient Modules for
       Task-level Generalisation." EACL 2023 (arXiv:2202.13914).
    .. [2] Chen, Xu, Zhang, Guestrin. "Training Deep Nets with Sublinear Memory Cost."
       arXiv:1604.06174, 2016.

    Examples
    --------
    >>> import torch
    >>> from skillfit.skills import SkillConfig, SkillLinear, TaskContext
    >>> context = TaskContext()
    >>> layer = SkillLinear(torch.nn.Linear(8, 8), SkillConfig(n_tasks=3, n_shared=2), context)
    >>> with context.tasks([0, 2, 2]):   # one task id per row of the batch
    ...     print(context._host_tasks(), layer(torch.randn(3, 8)).shape)
    [0, 2] torch.Size([3, 8])
    >>> layer(torch.randn(3, 8))   # outside a scope the layer has no task ids
    Traceback (most recent call last):
    ...
    RuntimeError: A skill layer ran without task ids. ...
    """

    # The scopes' state, each thread's own (scope_state.py): one model serves many threads.
    bypassed = PerThread(lambda: False)
    has_unknown = PerThread(lambda: False)
    inference_cache = PerThread()  # dict | None
    merge = PerThread(lambda: False)
    content_routing = PerThread()  # ContentRouting | None
    cache_bytes_left = PerThread(lambda: 0)
    _batch_tasks = PerThread()  # torch.Tensor | None
    _example_group = PerThread()  # torch.Tensor | None
    _task_counts = PerThread()  # list[int] | None
    # (device, batch size) -> (batch tasks, example group) already on that device.
    _on_device = PerThread(dict)
    _noise = PerThread()  # dict[int, torch.Tensor] | None
    _noise_seed = PerThread()  # int | None
    _noise_generator = PerThread()  # torch.Generator | None

    def __init__(self) -> None:
        self.task_descriptions: torch.Tensor | None = None  # the model's own (PEMT), shared by all threads

    def __getattr__(self, name: str):
        """The plumbing's names from before 0.2 (``segments``, ...), with a FutureWarning."""
        if name in RENAMED_PLUMBING:
            warn_user(f"TaskContext.{name} is internal since skillfit 0.2 (now {RENAMED_PLUMBING[name]}): it is "
                      "the skill layers' plumbing, and the old name will be removed.", FutureWarning)
            return getattr(self, RENAMED_PLUMBING[name])
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

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
            Seed of the training noise drawn inside (see
            :meth:`~skillfit.skills.TaskContext.uniform_noise`). By default, a scope
            inside another shares that scope's noise, and an outermost scope draws
            from torch's global generator.

        Yields
        ------
        None
            The scope: skill layers read the task ids inside it.

        Raises
        ------
        ValueError
            If ``task_ids`` is not one-dimensional.

        See Also
        --------
        skillfit.skills.TaskContext.uniform_noise : The routers' training noise of the scope.

        Notes
        -----
        The distinct tasks and each example's index among them are computed once here,
        on the host, so that each skill layer mixes its skills once per task of the
        batch, as Polytropon routes by task, without a device sync. The previous
        task ids are restored when the scope ends, so scopes nest.

        Examples
        --------
        >>> from skillfit.skills import TaskContext
        >>> context = TaskContext()
        >>> with context.tasks([2, 0, 2]):
        ...     print(context._host_tasks(), context.has_unknown)
        ...     with context.tasks([-1]):
        ...         print(context._host_tasks(), context.has_unknown)
        ...     print(context._host_tasks())
        [0, 2] False
        [-1] True
        [0, 2]
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
            flag ``has_unknown``: no device sync); otherwise
            ``known(tasks.clamp_min(0))`` with the rows of task -1 replaced.

        See Also
        --------
        skillfit.skills.Router : Routers describe their weights for known and unknown tasks.

        Notes
        -----
        An unknown task routes over all the shared skills (Polytropon's skills,
        ``handle_unknown_task="average"``) and has no exclusive skills (C-Poly's).

        Examples
        --------
        >>> import torch
        >>> from skillfit.skills import TaskContext
        >>> context, table = TaskContext(), torch.tensor([10.0, 20.0, 30.0])
        >>> tasks = torch.tensor([-1, 2])
        >>> with context.tasks(tasks):
        ...     context.per_task(tasks, lambda known: table[known], 0.0)
        tensor([ 0., 30.])
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

    def _host_tasks(self) -> list[int]:
        """The distinct task indices of the batch, read from the host copy (no device sync).
        
        Skill layers mix their skills once per distinct task; a single-task batch
        reads its task here to run a merged weight.
        """
        return self._batch_tasks.tolist()

    def _segments(self, batch_size: int) -> list[tuple[int, int]] | None:
        """Row ranges ``[(start, end), ...]`` of each distinct task, if the rows are sorted by task.
        
        None when the rows are not grouped by task. Computed on the host: no device sync.
        With sorted rows a layer runs one product per task on a slice of the batch,
        mixing the skills once per task. ``batch_size`` may be a multiple of the
        number of task ids (generation repeats each example, as Transformers'
        ``generate`` does for beams).
        """
        if self._task_counts is None or self._example_group is None:
            return None
        repeat = batch_size // max(1, len(self._example_group))
        bounds, start = [], 0
        for count in self._task_counts:
            bounds.append((start, start + count * repeat))
            start += count * repeat
        return bounds

    def _groups(self, batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The distinct tasks of the batch and, per row, the index of its task among them.
        
        ``batch_size`` may be a multiple of the number of task ids: generation with
        beam search or several samples repeats each example consecutively (as
        Transformers' ``generate`` does), and each copy keeps its example's task.
        The skills are then mixed once per distinct task. Moved to ``device`` once
        per scope and batch size.
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

    def _row_tasks(self, batch_size: int, device: torch.device) -> torch.Tensor:
        """Each row's task index plus one (0: the unknown task), the row order of ``every_task``.
        
        Inside :meth:`~skillfit.skills.TaskContext.inference` a layer has mixed every
        task's factors once (Polytropon's per-task routing) and gathers each row's
        pair with these indices. ``batch_size`` may be a multiple of the number of task
        ids, as in ``_groups``.
        """
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
