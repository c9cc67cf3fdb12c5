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
