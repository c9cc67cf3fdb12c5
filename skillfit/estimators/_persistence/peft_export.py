"""Writing a fitted estimator as a standard peft adapter (LoRA per task, or POLY).

For one task ``t``, each skill layer's update is a sum of low-rank terms
``s_i A_i B_i`` (one term, or two when C-Poly adds exclusive skills in output space).
Stacking the terms' ranks gives one LoRA of rank ``sum_i r_i``::

    A = [A_1 | A_2]            (d_in, r_1 + r_2)
    B = [s_1 B_1 ; s_2 B_2]    (r_1 + r_2, d_out)

written with ``lora_alpha = r`` so that peft's scale ``lora_alpha / r`` is 1. The
result equals the task's routed skills exactly, up to float rounding. The files
follow peft's layout, so peft (not needed to export) loads them with
``PeftModel.from_pretrained``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.pytorch_utils import Conv1D

from ...skills import skill_layers
from .folder_format import prepare_folder, to_json

FORMATS = ("lora", "poly")
HEAD_WEIGHTS_FILE = "skillfit_head.safetensors"
HEAD_CONFIG_FILE = "skillfit_head.json"


@dataclass(frozen=True)
class ExportSource:
    """What an export reads of a fitted estimator.

    Attributes
    ----------
    network : nn.Module
        The skilled network (``network_``).
    tasks : ndarray
        ``tasks_``; row ``i`` of every per-task tensor is ``tasks[i]``.
    classes : ndarray or None
        ``classes_`` of a classifier, None for text-to-text.
    backbone_name, backbone_revision : str, str or None
        The base model peft loads the adapter onto.
    backbone_kind : {"model", "generator"}
        Hidden states (classifiers) or a generation model.
    decoder_only : bool
        Whether a generation model is a causal LM.
    estimator_name : str
        The estimator's class name, for error messages.
    """

    network: torch.nn.Module
    tasks: np.ndarray
    classes: np.ndarray | None
    backbone_name: str
    backbone_revision: str | None
    backbone_kind: str
    decoder_only: bool
    estimator_name: str


def _module_prefix(source: ExportSource) -> str:
    """Path of the skilled module inside the model peft wraps: a classifier's encoder sits in ``encoder.``."""
    if source.backbone_kind == "model" and source.network.backbone.config.is_encoder_decoder:
        return "encoder."
    return ""


def _task_row(source: ExportSource, task: Any) -> int:
    tasks = source.tasks.tolist()
    if task is None:
        if len(tasks) == 1:
            return 0
        raise ValueError(f"export_peft(format='lora') writes one task's adapter; pass task= one of {tasks[:20]}.")
    if task not in tasks:
        raise ValueError(f"task={task!r} is not a fitted task; choose one of {tasks[:20]}.")
    return tasks.index(task)


def _check_exportable(source: ExportSource) -> None:
    if getattr(source.network, "task_descriptions", None) is not None:
        raise ValueError(
            f"{source.estimator_name} prepends a learned task-description token to every input (PEMT), "
            "which a peft LoRA adapter cannot hold. Export a LoRA, Poly, C-Poly or MTLoRA estimator, or "
            "share this one with save_pretrained."
        )


def _peft_config(source: ExportSource, peft_type: str, layers: dict[str, Any]) -> dict[str, Any]:
    if source.backbone_kind == "model":
        task_type = None
    else:
        task_type = "CAUSAL_LM" if source.decoder_only else "SEQ_2_SEQ_LM"
    return {
        "peft_type": peft_type,
        "task_type": task_type,
        "base_model_name_or_path": source.backbone_name,
        "revision": source.backbone_revision,
        "target_modules": sorted(layers),
        "inference_mode": True,
        "modules_to_save": None,
    }


def export_lora(source: ExportSource, folder: Path, task: Any) -> None:
    """One LoRA adapter holding task ``task``'s routed shared and exclusive skills."""
    from safetensors.torch import save_file

    row = _task_row(source, task)
    prefix = _module_prefix(source)
    tensors, ranks, dropouts = {}, {}, set()
    network = source.network
    network.eval()
    with torch.no_grad():
        for name, layer in skill_layers(network.backbone):
            terms = layer.task_products(torch.tensor([row], device=layer.shared_enabled.device))
            A = torch.cat([A_i[0] for A_i, _, _ in terms], dim=1)
            B = torch.cat([scale * B_i[0] for _, B_i, scale in terms], dim=0)
            key = f"base_model.model.{prefix}{name}"
            tensors[f"{key}.lora_A.weight"] = A.T.float().cpu().contiguous()
            tensors[f"{key}.lora_B.weight"] = B.T.float().cpu().contiguous()
            ranks[prefix + name] = A.shape[1]
            dropouts.add(layer.config.dropout)
    rank = Counter(ranks.values()).most_common(1)[0][0]
    pattern = {name: r for name, r in ranks.items() if r != rank}
    config = {
        **_peft_config(source, "LORA", ranks),
        "r": rank,
        "lora_alpha": rank,
        "rank_pattern": pattern,
        "alpha_pattern": dict(pattern),  # alpha = r everywhere: peft's scale is 1, the scale is in B
        "lora_dropout": max(dropouts),
        # GPT-2's Conv1D stores its weight as (in, out).
        "fan_in_fan_out": any(isinstance(layer.base_layer, Conv1D) for _, layer in skill_layers(network.backbone)),
        "bias": "none",
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
    }
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    _export_head(source, folder, row)


def export_poly(source: ExportSource, folder: Path) -> None:
    """peft's POLY format: every task's routing over the shared skills."""
    from safetensors.torch import save_file

    layers = list(skill_layers(source.network.backbone))
    configs = {layer.config for _, layer in layers}
    poly = all(
        layer.config.routing == "poly" and layer.exclusive_A is None and bool(layer.shared_enabled.all())
        for _, layer in layers
    )
    if not poly or len({(c.rank, c.n_shared, c.n_splits, c.n_tasks) for c in configs}) != 1:
        raise ValueError(
            f"format='poly' writes peft's POLY adapter, which holds routed shared skills only; "
            f"{source.estimator_name} has exclusive, private or per-layer-sized skills. Use "
            "format='lora' with task= to export one task."
        )
    config = next(iter(configs))
    prefix = _module_prefix(source)
    tensors = {}
    with torch.no_grad():
        for name, layer in layers:
            key = f"base_model.model.{prefix}{name}"
            # peft divides by r where skillfit multiplies by alpha / r.
            tensors[f"{key}.poly_lora_A"] = layer.shared_A.float().cpu().contiguous()
            tensors[f"{key}.poly_lora_B"] = (layer.shared_B * config.scale * config.rank).float().cpu().contiguous()
            logits = layer.router.routing_logits
            tensors[f"{key}.poly_router.module_logits"] = logits.reshape(len(logits), -1).float().cpu().contiguous()
    peft_config = {
        **_peft_config(source, "POLY", {prefix + name: None for name, _ in layers}),
        "r": config.rank,
        "n_tasks": config.n_tasks,
        "n_skills": config.n_shared,
        "n_splits": config.n_splits,
        "poly_type": "poly",
        "init_weights": True,
    }
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    (folder / "adapter_config.json").write_text(json.dumps(peft_config, indent=2) + "\n")
    _export_head(source, folder, None)


def _export_head(source: ExportSource, folder: Path, row: int | None) -> None:
    """A classifier's head, labels in ``classes_`` order: ``logits = pooled @ weight.T + bias``.

    With ``row``, only that task's labels; otherwise every label and the tasks' label mask.
    """
    from safetensors.torch import save_file

    network = source.network
    if not hasattr(network, "head"):
        return
    head = network.head
    order = head.label_order.cpu()
    weight = torch.cat([block.weight.detach().float().cpu() for block in head.blocks])[order]
    bias = torch.cat([block.bias.detach().float().cpu() for block in head.blocks])[order]
    mask = network.label_mask.cpu()
    info: dict[str, Any] = {"pooling": network.pooling, "tasks": to_json(source.tasks)}
    if row is not None:
        columns = mask[row]
        weight, bias = weight[columns], bias[columns]
        info.update(task=to_json(source.tasks.tolist()[row]), labels=to_json(source.classes[columns.numpy()]))
    else:
        info.update(labels=to_json(source.classes), label_mask=np.asarray(mask).tolist())
    save_file({"weight": weight.contiguous(), "bias": bias.contiguous()}, str(folder / HEAD_WEIGHTS_FILE))
    (folder / HEAD_CONFIG_FILE).write_text(json.dumps(info, indent=2) + "\n")


def export_peft(source: ExportSource, path: Any, *, task: Any, format: str) -> None:
    """Write ``source`` as a peft adapter folder; see ``SkillEstimatorBase.export_peft``."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}.")
    _check_exportable(source)
    folder = prepare_folder(path, "path")
    if format == "poly":
        if task is not None:
            raise ValueError("format='poly' holds every task; leave task= unset.")
        export_poly(source, folder)
    else:
        export_lora(source, folder, task)
