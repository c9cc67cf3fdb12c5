"""The skill layer: a frozen linear layer plus a routed inventory of low-rank skills.

One class serves every method; :class:`~skillfit.skills.SkillConfig` says which
(``docs/methods.md`` for each method, ``docs/architecture.md`` for the layers). For the
tasks ``t`` of a batch, with ``w = router(tasks, context)`` and ``v`` the exclusive
mixer's weights::

    A_t = concat_h (sum_k w[t,h,k] A[h,k] + sum_e v[t,h,e] A_ex[t,h,e])   # (d_in, r)
    B_t = concat_h (sum_k w[t,h,k] B[h,k] + sum_e v[t,h,e] B_ex[t,h,e])   # (r, d_out)
    y   = W0 x + s * x A_t B_t                                           # s = alpha / r

The sums over ``k`` are Polytropon's average of a task's skills (Ponti et al. 2022,
Eq. 3, ``w`` from the relaxed Bernoulli of their Eq. 2), the concatenation over heads
``h`` is multi-head routing (Caccia et al. 2023), the sums over ``e`` are C-Poly's
task-specific skills (Wang et al. 2023), and the last line is LoRA's forward pass
(Hu et al. 2022, Eq. 3, ``h = W0 x + B A x``, here in ``x @ W`` orientation).
With ``combine="output"`` the shared and exclusive parts are two products:
``y = W0 x + s (x A_sh B_sh + x A_ex B_ex)``; PEMT's gate mixes products that way
(Lin et al. 2024): ``x A_cat diag(g) B_cat = sum_k g_k x A_k B_k``.

``A_t, B_t`` are mixed once per distinct task of the batch. A batch of few tasks with
rows sorted by task (as ``fit`` sorts them) gets one product per task on a slice; any
other batch one batched product where each row gathers its task's pair, whose cost
does not grow with the number of tasks (``low_rank_update``). Inside
``TaskContext.inference()`` (prediction) every task's ``A_t, s B_t`` are mixed once
per scope, so a batch costs one gather and two batched products per layer, and a
single-task batch runs one dense ``W0 + s A_t B_t``, computed once per task and never
written back.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import SkillConfig
from .content_routing import ContentRoutingMixin
from .context import TaskContext
from .memory import check_skill_memory
from .layer_growth import TaskGrowthMixin
from .layer_inference import InferencePathsMixin
from .low_rank import (  # re-exported: skillfit.skills.layer.<name> stays the path
    autocast_dtype as autocast_dtype,
    SLICED_TASKS_LIMIT as SLICED_TASKS_LIMIT,
    linear_features as linear_features,
    low_rank_update as low_rank_update,
    sliced_tasks_limit as sliced_tasks_limit,
)
from .routing import ExclusiveMixer, GateRouter, PolyRouter, Router, UniformRouter


class SkillLinear(InferencePathsMixin, ContentRoutingMixin, TaskGrowthMixin, nn.Module):
    """A frozen linear layer with a skill inventory and its routing.

    Parameters
    ----------
    base_layer : nn.Linear or transformers.pytorch_utils.Conv1D
        The layer to adapt; it is kept untouched and frozen.
    config : SkillConfig
        Inventory sizes and routing rule.
    context : TaskContext
        Shared holder of the current batch's task ids.
    name : str, default=""
        Qualified name of the layer in its model, used in error messages.

    Attributes
    ----------
    shared_A, shared_B : nn.Parameter or None
        Shared skills, shapes ``(H, K, d_in/H, r)`` and ``(H, K, r, d_out/H)``.
    exclusive_A, exclusive_B : nn.Parameter or None
        Exclusive skills, shapes ``(T, H, E, d_in/H, r_ex)`` and ``(T, H, E, r_ex, d_out/H)``.
    router : Router or None
        Task-skill routing over the shared skills, called as ``router(tasks, context)``
        (None only without shared skills).
    exclusive_mixer : ExclusiveMixer or None
        Each task's weights over its exclusive skills.
    shared_enabled : buffer of shape (T,)
        1 where a task uses the shared skills; 0 for tasks adapted with Poly-mu, which
        start from the skills' average as their own adapter.
    route_prototypes : buffer of shape (H, K, d_in/H) or None
        Each shared skill's routing prototype for content routing
        (:meth:`~skillfit.skills.SkillLinear.attach_prototypes`); None until attached,
        and for layers whose skills are not routed by task.

    Raises
    ------
    ValueError
        If ``config.n_splits`` does not divide the input and output widths of
        ``base_layer``.

    See Also
    --------
    skillfit.skills.SkillConfig : The inventory sizes and routing rule of the layer.
    skillfit.skills.inject_skills : Replace a model's target layers by skill layers.
    skillfit.skills.TaskContext : The task ids that every skill layer reads.
    skillfit.skills.SkillLinear.task_products : Each task's low-rank update.

    Notes
    -----
    For the tasks ``t`` of a batch the layer computes ``y = W0 x + s x A_t B_t`` with
    ``s = alpha / r``: LoRA's forward pass [1]_, with ``A_t`` and ``B_t`` Polytropon's
    average of the task's shared skills [2]_, concatenated over the routing heads
    (multi-head routing [3]_), plus the task's exclusive skills (C-Poly [4]_). The
    same layer is MTLoRA's task-agnostic plus task-specific modules [5]_ and PEMT's
    gated experts [6]_. The skills are mixed once per distinct task of the batch,
    never per example. ``B`` starts at zero, so a new layer computes what its base
    layer computes.

    References
    ----------
    .. [1] Hu, Shen, Wallis, Allen-Zhu, Li, Wang, Wang, Chen. "LoRA: Low-Rank Adaptation of
       Large Language Models." ICLR 2022 (arXiv:2106.09685).
    .. [2] Ponti, Sordoni, Bengio, Reddy. "Combining Parameter-efficient Modules for
       Task-level Generalisation." EACL 2023 (arXiv:2202.13914).
    .. [3] Caccia, Ponti, Su, Pereira, Le Roux, Sordoni. "Multi-Head Adapter Routing for
       Cross-Task Generalization." NeurIPS 2023 (arXiv:2211.03831).
    .. [4] Wang, Sun, Jin, Wang, Fan, Xu, Du, Fan. "Customizable Combination of
       Parameter-Efficient Modules for Multi-Task Learning." ICLR 2024 (arXiv:2312.03248).
    .. [5] Agiza, Neseem, Reda. "MTLoRA: Low-Rank Adaptation Approach for Efficient
       Multi-Task Learning." CVPR 2024 (arXiv:2403.20320).
    .. [6] Lin, Fu, Liu, Li, Sun. "PEMT: Multi-Task Correlation Guided
       Mixture-of-Experts Enables Parameter-Efficient Transfer Learning." Findings of
       ACL 2024 (arXiv:2402.15082).

    Examples
    --------
    >>> import torch
    >>> from skillfit.skills import SkillConfig, SkillLinear, TaskContext
    >>> _ = torch.manual_seed(0)
    >>> context = TaskContext()
    >>> layer = SkillLinear(torch.nn.Linear(8, 8), SkillConfig(n_tasks=3, n_shared=4, rank=2), context)
    >>> layer.shared_A.shape, layer.shared_B.shape   # (H, K, d_in/H, r), (H, K, r, d_out/H)
    (torch.Size([1, 4, 8, 2]), torch.Size([1, 4, 2, 8]))
    >>> x = torch.randn(4, 5, 8)
    >>> with context.tasks([0, 0, 1, 2]):   # each row's task
    ...     y = layer(x)
    >>> y.shape
    torch.Size([4, 5, 8])
    >>> torch.allclose(y, layer.base_layer(x))   # B = 0: it starts as its base layer
    True
    """

    def __init__(self, base_layer: nn.Module, config: SkillConfig, context: TaskContext, name: str = "") -> None:
        super().__init__()
        self.base_layer = base_layer
        self.config = config
        self.context = context
        self.in_features, self.out_features = linear_features(base_layer)
        heads = config.n_splits
        for width_name, width in (("input", self.in_features), ("output", self.out_features)):
            if width % heads:
                raise ValueError(
                    f"n_splits={heads} does not divide the {width_name} width {width} of layer "
                    f"{name or type(base_layer).__name__!r}; choose n_splits among the common "
                    f"divisors of {self.in_features} and {self.out_features}."
                )
        d_in, d_out = self.in_features // heads, self.out_features // heads
        r, r_ex = config.rank, config.task_rank
        T, K, E = config.n_tasks, config.n_shared, config.n_exclusive
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        n_values = heads * (K * (d_in + d_out) * r + T * E * (d_in + d_out) * r_ex + T * K + T * E)
        check_skill_memory(n_values, name or type(base_layer).__name__, base_layer.weight.device, config)

        self.shared_A = nn.Parameter(torch.empty(heads, K, d_in, r)) if K else None
        self.shared_B = nn.Parameter(torch.zeros(heads, K, r, d_out)) if K else None
        self.router = self._make_router(config) if K else None
        self.exclusive_A = nn.Parameter(torch.empty(T, heads, E, d_in, r_ex)) if E else None
        self.exclusive_B = nn.Parameter(torch.zeros(T, heads, E, r_ex, d_out)) if E else None
        self.exclusive_mixer = ExclusiveMixer(T, heads, E) if E else None
        self.register_buffer("shared_enabled", torch.ones(T))
        self.register_buffer("route_prototypes", None)
        self.reset_skills()

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._buffers.setdefault("route_prototypes", None)  # pickled before content routing existed
        if self.shared_A is not None and self.router is None:
            # Pickled before plain LoRA had a UniformRouter (it held None); it keeps no state.
            self.router = UniformRouter(self.config.n_splits)

    @property
    def weight(self) -> torch.Tensor:
        """The frozen base weight (models such as T5 read ``layer.weight`` directly).

        The skills leave it untouched, as LoRA leaves ``W0``; a model that reads a
        layer's weight, for instance to pick its compute dtype, sees the base layer's.

        See Also
        --------
        skillfit.skills.SkillLinear.bias : The base layer's bias.
        skillfit.skills.SkillLinear.merged_weight : The weight with one task's update folded in.

        Examples
        --------
        >>> import torch
        >>> from skillfit.skills import SkillConfig, SkillLinear, TaskContext
        >>> base = torch.nn.Linear(8, 4)
        >>> layer = SkillLinear(base, SkillConfig(n_tasks=2), TaskContext())
        >>> layer.weight is base.weight, layer.weight.shape
        (True, torch.Size([4, 8]))
        """
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        """The base layer's bias, or None when it has none; the skills add no bias.

        LoRA's update ``Delta W x`` has no bias term, so the adapted layer keeps the
        base layer's.

        See Also
        --------
        skillfit.skills.SkillLinear.weight : The frozen base weight.

        Examples
        --------
        >>> import torch
        >>> from skillfit.skills import SkillConfig, SkillLinear, TaskContext
        >>> base = torch.nn.Linear(8, 4)
        >>> SkillLinear(base, SkillConfig(n_tasks=2), TaskContext()).bias is base.bias
        True
        >>> SkillLinear(torch.nn.Linear(8, 4, bias=False), SkillConfig(n_tasks=2), TaskContext()).bias is None
        True
        """
        return self.base_layer.bias

    @staticmethod
    def _make_router(config: SkillConfig) -> Router:
        if config.routing == "poly":
            return PolyRouter(config.n_tasks, config.n_splits, config.n_shared, config.temperature)
        if config.routing == "gate":
            return GateRouter(config.n_shared, config.description_dim, config.temperature)
        return UniformRouter(config.n_splits)

    def _init_A(self, A: torch.Tensor) -> None:
        # kaiming_uniform_(a=sqrt(5)) on an (r, fan_in) block, as nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        bound = 1.0 / math.sqrt(self.in_features // self.config.n_splits)
        nn.init.uniform_(A, -bound, bound)

    def reset_skills(self) -> None:
        """A as ``nn.Linear``'s default (Kaiming-uniform, a=sqrt(5)) per skill block, B = 0.

        LoRA's initialisation: with ``B = 0`` every task's update is zero, so the
        layer starts as its base layer, and Polytropon's skills start the same way.
        Each block of ``A`` is drawn from ``U(-1/sqrt(d_in/H), 1/sqrt(d_in/H))``. The
        routers are not reset.

        See Also
        --------
        skillfit.skills.SkillLinear.add_tasks : New tasks' exclusive skills start the same way.
        skillfit.skills.SkillLinear.delta_weight : Each task's update (zero after a reset).

        Examples
        --------
        >>> import torch
        >>> from skillfit.skills import SkillConfig, SkillLinear, TaskContext
        >>> layer = SkillLinear(torch.nn.Linear(8, 8), SkillConfig(n_tasks=2, n_shared=2), TaskContext())
        >>> with torch.no_grad():
        ...     _ = layer.shared_B.fill_(1.0)
        >>> layer.reset_skills()
        >>> bool((layer.shared_B == 0).all()), bool(layer.shared_A.abs().max() <= 8 ** -0.5)
        (True, True)
        """
        for A, B in ((self.shared_A, self.shared_B), (self.exclusive_A, self.exclusive_B)):
            if A is not None:
                self._init_A(A.data)
                nn.init.zeros_(B)

    # ---------------------------------------------------------------- factors
    def _shared_factors(self, tasks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Shared part, per head: ``(U, H, d_in/H, r')`` and ``(U, H, r', d_out/H)``."""
        A, B = self.shared_A, self.shared_B
        # An unknown task routes over the shared skills.
        enabled = self.context.per_task(tasks, lambda known: self.shared_enabled[known], 1.0)
        weights = self.router(tasks, self.context).to(device=A.device, dtype=A.dtype)
        return self.router.mix(weights * enabled.to(A.dtype).view(-1, 1, 1), A, B)

    def _exclusive_factors(self, tasks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exclusive part (C-Poly, Wang et al. 2023); zero for an unknown task, which has none."""
        return self.exclusive_mixer.mix(tasks, self.context, self.exclusive_A, self.exclusive_B)

    def _as_matrices(self, A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-head blocks to ``(U, d_in, r)`` and ``(U, r, d_out)``: heads split A's rows, B's columns."""
        n_tasks, heads, _, rank = A.shape
        B = B.permute(0, 2, 1, 3).reshape(n_tasks, rank, self.out_features)
        return A.reshape(n_tasks, self.in_features, rank), B

    def task_products(self, tasks: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
        """The low-rank terms ``(A_t, B_t, scale)`` whose sum is each task's update.

        One term when shared and exclusive factors are added in weight space, two
        when they are combined in output space.

        Parameters
        ----------
        tasks : LongTensor of shape (U,)
            Task indices; -1 for an unknown task, only inside a ``context.tasks(...)``
            scope whose batch holds it.

        Returns
        -------
        list of (Tensor, Tensor, float)
            One or two terms ``(A_t, B_t, scale)``, ``A_t`` of shape ``(U, d_in, r)``
            and ``B_t`` of shape ``(U, r, d_out)`` in ``x @ W`` orientation; the
            update of task ``u`` is the sum of ``scale * A_t[u] @ B_t[u]``.

        See Also
        --------
        skillfit.skills.SkillLinear.delta_weight : The sum of the terms as one matrix per task.
        skillfit.skills.SkillConfig : ``combine`` chooses between one and two terms.

        Notes
        -----
        The shared factors are Polytropon's routed average, cut in heads by
        multi-head routing; the exclusive factors are C-Poly's, added to the
        shared ones (``combine="weight"``) or kept as a second term with their own
        scale (``combine="output"``, as MTLoRA's task-specific modules).

        Examples
        --------
        >>> import torch
        >>> from skillfit.skills import SkillConfig, SkillLinear, TaskContext
        >>> config = SkillConfig(n_tasks=3, n_shared=4, n_exclusive=1, rank=2, combine="output")
        >>> layer = SkillLinear(torch.nn.Linear(8, 8), config, TaskContext()).eval()
        >>> terms = layer.task_products(torch.tensor([0, 2]))
        >>> [(tuple(A.shape), tuple(B.shape), scale) for A, B, scale in terms]
        [((2, 8, 2), (2, 2, 8), 4.0), ((2, 8, 2), (2, 2, 8), 4.0)]
        >>> len(SkillLinear(torch.nn.Linear(8, 8), SkillConfig(n_tasks=3, n_shared=4, n_exclusive=1),
        ...                 TaskContext()).task_products(torch.tensor([0])))   # combine="weight"
        1
        """
        config = self.config
        shared = self._shared_factors(tasks) if self.shared_A is not None else None
        exclusive = self._exclusive_factors(tasks) if self.exclusive_A is not None else None
        if config.combine == "weight" and shared is not None and exclusive is not None:
            A, B = shared[0] + exclusive[0], shared[1] + exclusive[1]
            return [(*self._as_matrices(A, B), config.scale)]
        terms = []
        if shared is not None:
            terms.append((*self._as_matrices(*shared), config.scale))
        if exclusive is not None:
            terms.append((*self._as_matrices(*exclusive), config.exclusive_scale))
        return terms

    def delta_weight(self, tasks: torch.Tensor) -> torch.Tensor:
        """Each task's full update ``s * A_t B_t`` in ``x @ W`` orientation, shape (U, d_in, d_out).

        LoRA's ``Delta W = B A`` for each task, with the task's factors mixed from
        the skills as Polytropon mixes them (and C-Poly's exclusive skills):
        the layer's output is ``W0 x + x @ delta_weight(t)``.

        Parameters
        ----------
        tasks : LongTensor of shape (U,)
            Task indices; -1 for an unknown task, only inside a ``context.tasks(...)``
            scope whose batch holds it.

        Returns
        -------
        Tensor of shape (U, d_in, d_out)
            The sum of the terms of :meth:`~skillfit.skills.SkillLinear.task_products`.

        See Also
        --------
        skillfit.skills.SkillLinear.task_products : The low-rank terms of the update.
        skillfit.skills.SkillLinear.merged_weight : One task's update folded into the base weight.
        skillfit.skills.routing_update_gram : Compare tasks by their updates.

        Examples
        --------
        >>> import torch
        >>> from skillfit.skills import SkillConfig, SkillLinear, TaskContext
        >>> _ = torch.manual_seed(0)
        >>> context = TaskContext()
        >>> layer = SkillLinear(torch.nn.Linear(8, 8), SkillConfig(n_tasks=3, n_shared=4, rank=2), context).eval()
        >>> with torch.no_grad():
        ...     _ = layer.shared_B.normal_()   # trained skills: B is no longer zero
        >>> delta = layer.delta_weight(torch.tensor([0, 2]))
        >>> delta.shape
        torch.Size([2, 8, 8])
        >>> x = torch.randn(2, 8)
        >>> with context.tasks([0, 2]):
        ...     y = layer(x)
        >>> torch.allclose(y, layer.base_layer(x) + torch.einsum("nd,nde->ne", x, delta), atol=1e-5)
        True
        """
        return sum(scale * (A @ B) for A, B, scale in self.task_products(tasks))

    # Under torch.compile the frozen backbone around this layer is compiled; the task routing
    # (host-side task groups) stays eager, so a new batch composition never recompiles.
    @torch.compiler.disable
    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """``W0 x + s x A_t B_t`` for each row, with ``t`` the row's task in the context.

        LoRA's forward pass with each task's factors mixed from the skills.
        Inside ``context.bypass()`` the base layer alone runs; inside
        ``context.content_routed(...)`` the shared skills are weighed per token.

        Parameters
        ----------
        x : Tensor of shape (N, ..., d_in)
            One row per task id set through ``context.tasks(...)`` (or a multiple of
            them: beam search repeats each example).
        *args : tuple
            Passed on to the base layer.
        **kwargs : dict
            Passed on to the base layer.

        Returns
        -------
        Tensor of shape (N, ..., d_out)
            The base layer's output plus each row's task update.

        See Also
        --------
        skillfit.skills.SkillLinear.task_products : The terms the update is made of.
        skillfit.skills.TaskContext.tasks : Set the rows' tasks.

        Examples
        --------
        >>> import torch
        >>> from skillfit.skills import SkillConfig, SkillLinear, TaskContext
        >>> context = TaskContext()
        >>> layer = SkillLinear(torch.nn.Linear(8, 4), SkillConfig(n_tasks=3, n_shared=2), context)
        >>> with context.tasks([2, 0, 1]):
        ...     print(layer(torch.randn(3, 6, 8)).shape)
        torch.Size([3, 6, 4])
        """
        context = self.context
        if context.bypassed:
            return self.base_layer(x, *args, **kwargs)
        if context.content_routing is not None and self.route_prototypes is not None:
            return self._content_routed_forward(x, *args, **kwargs)
        if context.inference_cache is not None and not self.training and not torch.is_grad_enabled():
            factors = self._every_task_factors(x.device)
            if factors is not None:
                return self._cached_forward(x, factors, *args, **kwargs)
        batch_tasks, example_group = context._groups(x.shape[0], x.device)
        if (context.inference_cache is not None and context.merge and len(batch_tasks) == 1 and self.can_merge
                and not torch.is_grad_enabled()):
            return self._merged_forward(x, lambda: self.merged_weight(batch_tasks))
        result = self.base_layer(x, *args, **kwargs)
        rows = self.dropout(x).reshape(x.shape[0], -1, self.in_features)
        segments = context._segments(x.shape[0]) if len(batch_tasks) <= sliced_tasks_limit(x.device) else None
        delta = None
        autocast = autocast_dtype(x.device) is not None  # under autocast the products cast for themselves
        # Skills are mixed once per task of the batch (task_products), never per example.
        for A, B, scale in self.task_products(batch_tasks):
            if not autocast:
                rows = rows.to(A.dtype)
            # The scale goes on B (U x r x d_out), not on the (rows x d_out) output.
            update = low_rank_update(rows, A, scale * B, example_group, segments)
            delta = update if delta is None else delta + update
        return result + delta.reshape(result.shape).to(result.dtype)  # h = W0 x + B A x (Hu et al. 2022, Eq. 3)

    # --------------------------------------------------------- content routing

    # --------------------------------------------------------------- new tasks

    def extra_repr(self) -> str:
        """The widths and inventory shown in the module's ``repr``.

        Returns
        -------
        str
            The layer's widths and the numbers of its :class:`~skillfit.skills.SkillConfig`
            (skill rank as in LoRA, shared skills and heads as in Polytropon).

        See Also
        --------
        skillfit.skills.SkillConfig : Where the numbers come from.

        Examples
        --------
        >>> import torch
        >>> from skillfit.skills import SkillConfig, SkillLinear, TaskContext
        >>> layer = SkillLinear(torch.nn.Linear(8, 4), SkillConfig(n_tasks=3, n_shared=2, rank=2), TaskContext())
        >>> print(layer.extra_repr())
        in_features=8, out_features=4, rank=2, n_shared=2, n_exclusive=0, n_splits=1,
        n_tasks=3, routing='poly', combine='weight'
        """
        c = self.config
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, rank={c.rank}, "
            f"n_shared={c.n_shared}, n_exclusive={c.n_exclusive}, n_splits={c.n_splits}, "
            f"n_tasks={c.n_tasks}, routing={c.routing!r}, combine={c.combine!r}"
        )

