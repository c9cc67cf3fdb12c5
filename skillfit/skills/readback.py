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
    The weights are Polytropon's normalised task-skill allocation [1]_, one per head
    as in multi-head routing [2]_.

    Parameters
    ----------
    model : nn.Module
        A model with skill layers.

    Returns
    -------
    dict of str to ndarray
        For each Poly-routed layer's qualified name, every task's weights, of shape
        ``(n_tasks, n_splits, n_shared)``, summing to one over the skills of each head
        (all zeros for tasks adapted with Poly-mu, ``mode="average"``).

    See Also
    --------
    skillfit.skills.PolyRouter.eval_weights : One layer's weights.
    skillfit.skills.gate_weights : The same for PEMT's gated layers.
    skillfit.plotting.plot_routing : Plots the routing of a fitted estimator.

    References
    ----------
    .. [1] Ponti, Sordoni, Bengio, Reddy. "Combining Parameter-efficient Modules for
       Task-level Generalisation." EACL 2023 (arXiv:2202.13914).
    .. [2] Caccia, Ponti, Su, Pereira, Le Roux, Sordoni. "Multi-Head Adapter Routing for
       Cross-Task Generalization." NeurIPS 2023 (arXiv:2211.03831).

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from torch import nn
    >>> from skillfit.skills import SkillConfig, inject_skills
    >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    >>> context = inject_skills(model, SkillConfig(n_tasks=3, n_shared=3, n_splits=2, rank=2), "all-linear")
    >>> from skillfit.skills import add_tasks, routing_weights
    >>> weights = routing_weights(model)
    >>> {name: array.shape for name, array in weights.items()}
    {'0': (3, 2, 3), '2': (3, 2, 3)}
    >>> np.allclose(weights["0"].sum(-1), 1.0)
    True
    >>> add_tasks(model, 1, average=True)  # Poly-mu: the new task is off the shared skills
    >>> routing_weights(model)["0"][3]
    array([[0., 0., 0.],
           [0., 0., 0.]], dtype=float32)
    """
    return _task_weights(model, "poly", lambda weights: weights)


def gate_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """Gate of every task over the experts in each gated layer (PEMT), ``(n_tasks, n_experts)``.

    The gates ``softmax(q_t W_g / tau)`` of PEMT [1]_, read from the task descriptions
    that the model's task context holds.

    Parameters
    ----------
    model : nn.Module
        A model with skill layers, gated by :func:`~skillfit.skills.gate_experts`.

    Returns
    -------
    dict of str to ndarray
        For each gated layer's qualified name, every task's gate, of shape
        ``(n_tasks, n_experts)``, summing to one over the experts.

    See Also
    --------
    skillfit.skills.GateRouter.task_weights : One layer's gates.
    skillfit.skills.routing_weights : The same for Poly-routed layers.

    References
    ----------
    .. [1] Lin, Fu, Liu, Li, Sun. "PEMT: Multi-Task Correlation Guided
       Mixture-of-Experts Enables Parameter-Efficient Transfer Learning." Findings of ACL 2024
       (arXiv:2402.15082).

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from torch import nn
    >>> from skillfit.skills import SkillConfig, gate_experts, gate_weights, inject_skills
    >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    >>> config = SkillConfig(n_tasks=3, n_shared=0, n_exclusive=1, routing="none", rank=2)
    >>> context = inject_skills(model, config, "all-linear")
    >>> gate_experts(model, description_dim=5)
    >>> context.task_descriptions = torch.randn(3, 5)
    >>> gates = gate_weights(model)
    >>> {name: array.shape for name, array in gates.items()}
    {'0': (3, 3), '2': (3, 3)}
    >>> np.allclose(gates["0"], 1 / 3)  # the gate starts uniform
    True
    """
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
    The weights ``w`` are Polytropon's routing (Ponti et al. 2023), per head as in (Caccia et al. 2023); the
    updates are LoRA products [3]_.

    Parameters
    ----------
    model : nn.Module
        A model with skill layers.

    Returns
    -------
    ndarray of shape (n_tasks, n_tasks), or None when no layer is Poly-routed.
        The Gram matrix, in float64, from the routers' evaluation weights.

    See Also
    --------
    skillfit.skills.centred_cosine : Turns the Gram matrix into task similarities.
    skillfit.skills.SkillLinear.delta_weight : One layer's updates, as matrices.
    skillfit.PolyClassifier.task_similarity : The estimators' task similarity, built on this.

    References
    ----------
    .. [3] Hu, Shen, Wallis, Allen-Zhu, Li, Wang, Wang, Chen. "LoRA: Low-Rank Adaptation of
       Large Language Models." ICLR 2022 (arXiv:2106.09685).

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from torch import nn
    >>> from skillfit.skills import SkillConfig, inject_skills
    >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    >>> context = inject_skills(model, SkillConfig(n_tasks=3, n_shared=3, n_splits=2, rank=2), "all-linear")
    >>> from skillfit.skills import routing_update_gram, skill_layers
    >>> _ = torch.manual_seed(0)
    >>> with torch.no_grad():  # B starts at zero: give the skills some updates
    ...     for _, layer in skill_layers(model):
    ...         _ = layer.shared_B.normal_()
    >>> gram = routing_update_gram(model)
    >>> gram.shape, gram.dtype, np.allclose(gram, gram.T)
    ((3, 3), dtype('float64'), True)

    It equals the inner products of the layers' full updates, computed directly:

    >>> _ = model.eval()
    >>> with torch.no_grad():
    ...     updates = [layer.delta_weight(torch.arange(3)) for _, layer in skill_layers(model)]
    ...     direct = sum(torch.einsum("sio,tio->st", update, update) for update in updates)
    >>> np.allclose(gram, direct.numpy(), rtol=1e-4)
    True
    >>> routing_update_gram(nn.Linear(2, 2)) is None
    True
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
    is similar to no other (0) and to itself (1). This is the centring of the kernel
    matrix in Kornblith et al.'s centred kernel alignment [1]_, applied to one Gram
    matrix to compare its vectors.

    Parameters
    ----------
    gram : array-like of shape (n, n)
        Inner products of ``n`` vectors, such as :func:`~skillfit.skills.routing_update_gram`'s.

    Returns
    -------
    ndarray of shape (n, n)
        Cosine similarities of the centred vectors, in ``[-1, 1]``, with ones on the
        diagonal.

    See Also
    --------
    skillfit.skills.routing_update_gram : The Gram matrix of the tasks' updates.
    skillfit.PolyClassifier.task_similarity : The estimators' task similarity, built on this.

    References
    ----------
    .. [1] Kornblith, Norouzi, Lee, Hinton. "Similarity of Neural Network Representations
       Revisited." ICML 2019 (arXiv:1905.00414).

    Examples
    --------
    Three vectors sharing a large offset: two sit on either side of their mean, the
    third is the mean.

    >>> import numpy as np
    >>> from skillfit.skills import centred_cosine
    >>> vectors = np.array([[6.0, 5.0], [4.0, 5.0], [5.0, 5.0]])
    >>> centred_cosine(vectors @ vectors.T).round(4)
    array([[ 1., -1.,  0.],
           [-1.,  1.,  0.],
           [ 0.,  0.,  1.]])
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
