"""Reading the learned routing of a model's skill layers back, as arrays per layer."""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from .inject import skill_layers
from .layer import SkillLinear


def routing_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """Evaluation-mode routing weights of each Poly-routed layer, ``(n_tasks, n_splits, n_shared)``.

    Tasks that do not use the shared skills (adapted with Poly-mu) get zero rows.
    """
    return _task_weights(model, "poly", lambda weights: weights)


def gate_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """Gate of every task over the experts in each gated layer (PEMT), ``(n_tasks, n_experts)``."""
    return _task_weights(model, "gate", lambda weights: weights[:, 0])  # gates have one head


def _routed_layers(model: nn.Module, routing: str) -> Iterator[tuple[str, SkillLinear, torch.Tensor]]:
    """``(name, layer, weights)`` of the layers routed by ``routing``: every task's router
    weights ``(n_tasks, n_splits, n_skills)``, zero for tasks off the shared skills."""
    for name, layer in skill_layers(model):
        if layer.config.routing == routing and layer.router is not None:  # no router without shared skills
            weights = layer.router.task_weights(layer.context)
            yield name, layer, weights * layer.shared_enabled.view(-1, 1, 1).to(weights.dtype)


def _task_weights(
    model: nn.Module, routing: str, reshape: Callable[[torch.Tensor], torch.Tensor]
) -> dict[str, np.ndarray]:
    """Every task's router weights in the layers routed by ``routing``, as arrays by layer name."""
    with torch.no_grad():
        return {name: reshape(weights).float().cpu().numpy() for name, _, weights in _routed_layers(model, routing)}


def routing_update_gram(model: nn.Module) -> np.ndarray | None:
    """Inner products of the updates each task's routing builds, summed over the routed layers.

    In every Poly-routed layer, task ``t`` gets the update ``s * A_t B_t`` from the
    shared skills, with ``A_t = sum_k w[t,h,k] A[h,k]`` per head (same for ``B_t``).
    Entry ``(s, t)`` is ``sum over layers of <s A_s B_s, s A_t B_t>_F``, computed from
    the skills' ``r x r`` Gram blocks, never from a ``d_in x d_out`` matrix. Exclusive
    skills are left out: this is what the routing makes of the shared skills.

    Returns
    -------
    ndarray of shape (n_tasks, n_tasks), or None when no layer is Poly-routed.
    """
    gram = None
    with torch.no_grad():
        for _, layer, weights in _routed_layers(model, "poly"):
            weights = weights.double()  # (T, H, K)
            A, B = layer.shared_A.double(), layer.shared_B.double()  # (H, K, d_in/H, r), (H, K, r, d_out/H)
            # A_s^T A_t = sum_{h,k,j} w[s,h,k] w[t,h,j] A[h,k]^T A[h,j], and B_s B_t^T alike;
            # <A_s B_s, A_t B_t>_F = <A_s^T A_t, B_s B_t^T>_F.
            a_blocks = torch.einsum("hkdr,hjdq->hkjrq", A, A)
            b_blocks = torch.einsum("hkro,hjqo->hkjrq", B, B)
            blocks = torch.einsum("hkjrq,abcrq->hkjabc", a_blocks, b_blocks)
            pairs = torch.einsum("shk,sab->shkab", weights, weights)
            layer_gram = torch.einsum("shkab,hkjabc,thjac->st", pairs, blocks, pairs) * layer.config.scale**2
            gram = layer_gram if gram is None else gram + layer_gram
    return None if gram is None else gram.cpu().numpy()


def centred_cosine(gram: np.ndarray) -> np.ndarray:
    """Cosine similarity of vectors given by their Gram matrix, after removing their mean.

    Double-centring ``J G J`` (``J = I - 1/n``) gives the inner products of the vectors
    minus their mean, so what all of them share drops out. A vector equal to the mean
    is similar to no other (0) and to itself (1).
    """
    n = len(gram)
    centring = np.eye(n) - 1.0 / n
    centred = centring @ np.asarray(gram, dtype=np.float64) @ centring
    # A deviation below round-off of the vectors' own size counts as none: at the mean.
    floor = 1e-10 * float(np.max(np.abs(np.diag(gram)), initial=0.0))
    squared = np.diag(centred)
    norms = np.sqrt(np.where(squared > floor, squared, 0.0))
    scale = np.outer(norms, norms)
    similarity = np.where(scale > 0, centred / np.where(scale > 0, scale, 1.0), 0.0)
    np.fill_diagonal(similarity, 1.0)
    return np.clip(similarity, -1.0, 1.0)
