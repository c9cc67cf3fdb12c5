"""Routing by content: weights over the shared skills chosen per token from its own states.

Used at predict time for rows without a known task (``handle_unknown_task="route"``),
after Arrow (Ostapenko et al. 2024, "Towards Modular LLMs by Building and Reusing a
Library of LoRAs", Sec. 4). No training: each shared skill ``k`` of head ``h`` gets a
prototype ``p[h, k]``, the top singular vector on the input side of its update
``A[h, k] B[h, k]`` (in ``x @ W`` orientation; the top *right* singular vector of
``Delta W = B^T A^T`` in peft's ``W x`` orientation). A token ``x`` (its block ``x_h``
for head ``h``) scores every skill by ``|<x_h, p[h, k]>|``, keeps the ``top_k`` best,
and their softmax (temperature ``tau``) weighs the skills. ``docs/transfer.md`` has the
equations and why the skills' factors are mixed, as Polytropon trains them, rather
than their outputs, as Arrow mixes independent LoRAs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .low_rank import autocast_dtype


@dataclass(frozen=True)
class ContentRouting:
    """How :meth:`TaskContext.content_routed <skillfit.skills.TaskContext.content_routed>` routes tokens.

    Parameters
    ----------
    top_k : int
        Skills kept per token and head (all of them when ``top_k >= n_shared``).
    temperature : float
        Softmax temperature over the kept scores.
    """

    top_k: int = 2
    temperature: float = 1.0


def skill_prototypes(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Each skill's top input-side singular vector of ``A[h, k] B[h, k]``.

    Exact, without forming the ``d_in x d_out`` update: with ``A = Q R`` (reduced QR),
    ``A B = Q (R B)``, so the top left singular vector of ``A B`` is ``Q u`` with ``u``
    the top left singular vector of the small ``r x d_out`` matrix ``R B``. Computed
    in float64. The sign of a singular vector is arbitrary; the routing score takes an
    absolute value, so it does not matter.

    Parameters
    ----------
    A : Tensor of shape (H, K, d_in/H, r)
    B : Tensor of shape (H, K, r, d_out/H)

    Returns
    -------
    Tensor of shape (H, K, d_in/H), unit vectors, float32
    """
    Q, R = torch.linalg.qr(A.detach().double())
    U, _, _ = torch.linalg.svd(R @ B.detach().double(), full_matrices=False)
    return (Q @ U[..., :1]).squeeze(-1).float()


def content_weights(rows: torch.Tensor, prototypes: torch.Tensor, routing: ContentRouting) -> torch.Tensor:
    """Per-token weights over the skills of each head: top-k of ``|<x_h, p[h, k]>|``, then a softmax.

    Parameters
    ----------
    rows : Tensor of shape (..., H, d_in/H)
        Token states cut in head blocks.
    prototypes : Tensor of shape (H, K, d_in/H)
    routing : ContentRouting

    Returns
    -------
    Tensor of shape (..., H, K)
        Zero outside each token's ``top_k`` skills; sums to 1 over ``K``.
    """
    scores = torch.einsum("...hd,hkd->...hk", rows, prototypes.to(rows.dtype)).abs().float()
    k = min(routing.top_k, scores.shape[-1])
    if k < scores.shape[-1]:
        kept, index = scores.topk(k, dim=-1)
        scores = torch.full_like(scores, float("-inf")).scatter(-1, index, kept)
    return torch.softmax(scores / routing.temperature, dim=-1)


class ContentRoutingMixin:
    """Routing by content in :class:`~skillfit.skills.SkillLinear` (``handle_unknown_task=\"route\"``)."""

    @property
    def routes_by_content(self) -> bool:
        """Whether content routing has a choice to make here: several shared skills routed by task.

        Content routing after Arrow picks among a layer's Polytropon skills:
        a layer with one shared skill, a gate or no shared skills keeps its routing.

        See Also
        --------
        skillfit.skills.SkillLinear.attach_prototypes : Compute the skills' prototypes.
        skillfit.skills.TaskContext.content_routed : Route by content inside a scope.

        Examples
        --------
        >>> import torch
        >>> from skillfit.skills import SkillConfig, SkillLinear, TaskContext
        >>> SkillLinear(torch.nn.Linear(8, 8), SkillConfig(n_tasks=3, n_shared=4), TaskContext()).routes_by_content
        True
        >>> SkillLinear(torch.nn.Linear(8, 8), SkillConfig(n_tasks=3, routing="none"), TaskContext()).routes_by_content
        False
        """
        return self.config.routing == "poly" and self.config.n_shared > 1

    def attach_prototypes(self) -> None:
        """Compute the shared skills' routing prototypes from their current weights (see ``content_routing.py``).

        As in Arrow, each skill's prototype is the top singular vector on the input
        side of its update ``A[h, k] B[h, k]``, computed exactly from the factors. The
        result is stored in ``route_prototypes``, of shape ``(H, K, d_in/H)``; layers
        where :attr:`~skillfit.skills.SkillLinear.routes_by_content` is False keep None.
        Call it again after the skills change.

        See Also
        --------
        skillfit.skills.SkillLinear.content_routing_weights : Each token's weights from the prototypes.
        skillfit.skills.TaskContext.content_routed : Route by content inside a scope.

        Examples
        --------
        >>> import torch
        >>> from skillfit.skills import SkillConfig, SkillLinear, TaskContext
        >>> _ = torch.manual_seed(0)
        >>> layer = SkillLinear(torch.nn.Linear(8, 8), SkillConfig(n_tasks=3, n_shared=4, n_splits=2), TaskContext())
        >>> with torch.no_grad():
        ...     _ = layer.shared_B.normal_()
        >>> layer.route_prototypes is None
        True
        >>> layer.attach_prototypes()
        >>> layer.route_prototypes.shape
        torch.Size([2, 4, 4])
        >>> torch.allclose(layer.route_prototypes.norm(dim=-1), torch.ones(2, 4))   # unit vectors
        True
        """
        if self.routes_by_content:
            self.route_prototypes = skill_prototypes(self.shared_A, self.shared_B).to(self.shared_A.device)

    def content_routing_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Each token's weights over the shared skills of each head, shape ``(..., H, K)``; rows sum to 1.

        Arrow's routing: a token's block ``x_h`` scores skill ``k`` by
        ``|<x_h, p[h, k]>|``, the ``top_k`` best scores are kept and their softmax
        (temperature ``tau``) weighs the skills. Read inside
        ``context.content_routed(...)``, after :meth:`~skillfit.skills.SkillLinear.attach_prototypes`.

        Parameters
        ----------
        x : Tensor of shape (..., d_in)
            Token states, the layer's input.

        Returns
        -------
        Tensor of shape (..., H, K)
            Zero outside each token's ``top_k`` skills; sums to 1 over ``K``.

        See Also
        --------
        skillfit.skills.SkillLinear.attach_prototypes : Compute the prototypes ``p``.
        skillfit.skills.TaskContext.content_routed : The scope that sets ``top_k`` and ``tau``.

        Examples
        --------
        >>> import torch
        >>> from skillfit.skills import SkillConfig, SkillLinear, TaskContext
        >>> from skillfit.skills.content_routing import ContentRouting
        >>> _ = torch.manual_seed(0)
        >>> context = TaskContext()
        >>> layer = SkillLinear(torch.nn.Linear(8, 8), SkillConfig(n_tasks=3, n_shared=4), context)
        >>> with torch.no_grad():
        ...     _ = layer.shared_B.normal_()
        >>> layer.attach_prototypes()
        >>> with context.content_routed(ContentRouting(top_k=2)):
        ...     weights = layer.content_routing_weights(torch.randn(3, 5, 8))
        >>> weights.shape
        torch.Size([3, 5, 1, 4])
        >>> torch.allclose(weights.sum(-1), torch.ones(3, 5, 1)), (weights > 0).sum(-1).unique().tolist()
        (True, [2])
        """
        heads = self.config.n_splits
        rows = x.reshape(*x.shape[:-1], heads, self.in_features // heads)
        return content_weights(rows, self.route_prototypes, self.context.content_routing)

    def _content_routed_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """``W0 x`` plus the shared skills mixed per token by content, and each row's exclusive skills."""
        if self.training or torch.is_grad_enabled():
            raise RuntimeError("Content routing is for prediction: put the model in eval mode under torch.no_grad().")
        context, config = self.context, self.config
        result = self.base_layer(x, *args, **kwargs)
        heads = config.n_splits
        A, B = self.shared_A, self.shared_B
        rows = x.reshape(x.shape[0], -1, heads, self.in_features // heads)
        if autocast_dtype(x.device) is None:
            rows = rows.to(A.dtype)
        batch_tasks, example_group = context._groups(x.shape[0], x.device)
        enabled = context.per_task(batch_tasks, lambda known: self.shared_enabled[known], 1.0)[example_group]
        weights = content_weights(rows, self.route_prototypes, context.content_routing).to(rows.dtype)
        weights = weights * enabled.to(rows.dtype).view(-1, 1, 1, 1)  # Poly-mu tasks (infer) do not share
        # Heads cut A's rows and B's columns (multi-head routing): z sums over the heads.
        z = torch.einsum("nlhk,nlhkr->nlr", weights, torch.einsum("nlhd,hkdr->nlhkr", rows, A))
        exclusive = None
        if self.exclusive_A is not None:
            A_ex, B_ex = (factor.index_select(0, example_group) for factor in self._exclusive_factors(batch_tasks))
            exclusive = torch.einsum("nlhd,nhdr->nlr", rows, A_ex.to(rows.dtype)), B_ex.to(rows.dtype)
        if exclusive is not None and config.combine == "weight":
            z = z + exclusive[0]
        mixed = weights.unsqueeze(-1) * z.unsqueeze(2).unsqueeze(2)  # (n, l, H, K, r)
        update = config.scale * torch.einsum("nlhkr,hkro->nlho", mixed, B)
        if exclusive is not None:
            scale = config.scale if config.combine == "weight" else config.exclusive_scale
            source = z if config.combine == "weight" else exclusive[0]
            update = update + scale * torch.einsum("nlr,nhro->nlho", source, exclusive[1])
        return result + update.reshape(result.shape).to(result.dtype)
