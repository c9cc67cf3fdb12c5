"""Saving a fitted estimator as a folder, loading it back, and pickling without the backbone.

A fitted estimator is three things: its frozen backbone (by reference: name, revision
and a SHA-256 of the weights), the structure of its network (the skill configuration
of every adapted layer and the shape of its head) and the tensors it trained. The
folder written by :func:`save_folder` holds::

    skillfit_config.json        parameters, fitted attributes, structure, backbone reference, versions
    skillfit_model.safetensors  every trained tensor (skills, routers, head, label masks)
    backbone/                   only with include_backbone=True: config, tokenizer, weights
    README.md                   a model card

Loading reads JSON and safetensors only; nothing is unpickled. Pickles use the same
split: the trained tensors travel, the backbone is reloaded by reference.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..backbones import Backbone, frozen_weights_sha256
from ..skills import SkillConfig, inject_skills, skill_layers

if TYPE_CHECKING:
    from ._base import SkillEstimatorBase

FORMAT_VERSION = 1
CONFIG_FILE = "skillfit_config.json"
WEIGHTS_FILE = "skillfit_model.safetensors"
BACKBONE_DIR = "backbone"
BACKBONE_WEIGHTS_FILE = "backbone.safetensors"

# Fitted attributes rebuilt from the network on load rather than stored.
DERIVED_ATTRIBUTES = {
    "network_", "tokenizer_", "device_",
    "routing_weights_", "layer_routing_weights_", "gate_weights_", "layer_gate_weights_",
}


# ------------------------------------------------------------------------------- JSON
def to_json(value: Any, where: str = "value") -> Any:
    """A JSON-ready form of ``value`` that :func:`from_json` turns back into the same type."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, np.generic):
        return value
    if isinstance(value, np.generic):
        return to_json(value.item(), where)
    if isinstance(value, np.ndarray):
        return {"__ndarray__": to_json(value.tolist(), where), "dtype": value.dtype.str if value.dtype != object else "object"}
    if isinstance(value, tuple):
        return {"__tuple__": [to_json(item, where) for item in value]}
    if isinstance(value, list):
        return [to_json(item, where) for item in value]
    if isinstance(value, dict):
        if all(isinstance(key, str) for key in value):
            if any(key.startswith("__") for key in value):
                return {"__items__": [[key, to_json(item, where)] for key, item in value.items()]}
            return {key: to_json(item, where) for key, item in value.items()}
        return {"__items__": [[to_json(key, where), to_json(item, where)] for key, item in value.items()]}
    if isinstance(value, torch.device):
        return str(value)
    raise TypeError(
        f"{where} holds a {type(value).__name__}, which save_pretrained cannot write as JSON. "
        "Use plain Python or numpy values for estimator parameters, or pickle the estimator instead."
    )


def from_json(value: Any) -> Any:
    """Invert :func:`to_json`."""
    if isinstance(value, list):
        return [from_json(item) for item in value]
    if not isinstance(value, dict):
        return value
    if "__ndarray__" in value:
        dtype = object if value["dtype"] == "object" else np.dtype(value["dtype"])
        return np.asarray(from_json(value["__ndarray__"]), dtype=dtype)
    if "__tuple__" in value:
        return tuple(from_json(item) for item in value["__tuple__"])
    if "__items__" in value:
        return {_hashable(from_json(key)): from_json(item) for key, item in value["__items__"]}
    return {key: from_json(item) for key, item in value.items()}


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


# ---------------------------------------------------------------------- network state
def adapter_state(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor of ``network`` that is not a frozen backbone weight, on the CPU.

    That is the skills, routers and mixers of each skill layer, the head, the label
    mask and the task descriptions: what training made or changed.
    """
    skill_prefixes = tuple(f"backbone.{name}." for name, _ in skill_layers(network.backbone))
    state = {}
    for key, tensor in network.state_dict().items():
        if key.startswith("backbone."):
            prefix = next((p for p in skill_prefixes if key.startswith(p)), None)
            if prefix is None or key[len(prefix):].startswith("base_layer."):
                continue
        state[key] = tensor.detach().to("cpu").contiguous()
    return state


def network_blueprint(network: torch.nn.Module, structure: dict[str, Any]) -> dict[str, Any]:
    """What is needed to rebuild ``network`` around a fresh backbone (JSON-ready)."""
    return {
        "layers": {name: dataclasses.asdict(layer.config) for name, layer in skill_layers(network.backbone)},
        "trainable": [name for name, param in network.named_parameters() if param.requires_grad],
        "structure": structure,
    }


def rebuild_network(estimator: "SkillEstimatorBase", backbone: Backbone, blueprint: dict, state: dict, where: str):
    """Put the blueprint's skill layers into ``backbone``, build the network and load ``state``."""
    configs = {name: SkillConfig(**config) for name, config in blueprint["layers"].items()}
    pattern = "|".join(re.escape(name) for name in configs)
    try:
        context = inject_skills(backbone.model, configs.__getitem__, pattern)
        network = estimator._network_from_structure(backbone, context, blueprint["structure"])
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(
            f"The skills in {where} do not fit the backbone {estimator.backbone!r}: {error} "
            "Load it with the backbone it was trained with."
        ) from error
    expected = set(adapter_state(network))
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"The weights in {where} do not match the network rebuilt from its config "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); the folder may be damaged or from "
            "another skillfit version."
        )
    try:
        network.load_state_dict(state, strict=False)
    except RuntimeError as error:
        details = "; ".join(line.strip() for line in str(error).splitlines()[1:3])
        raise ValueError(
            f"The weights in {where} do not fit the backbone {estimator.backbone!r} ({details}). "
            "Load it with the backbone it was trained with."
        ) from error
    trainable = set(blueprint["trainable"])
    for name, param in network.named_parameters():
        param.requires_grad_(name in trainable)
    return network


def check_backbone_hash(backbone: Backbone, expected: str | None, name: str, where: str) -> None:
    """Raise a clear error when the loaded backbone's weights are not the ones trained on."""
    if expected is None:
        return
    found = backbone.weights_sha256()
    if found != expected:
        raise ValueError(
            f"The backbone {name!r} loaded for {where} has other weights than the one it was trained on "
            f"(sha256 {found[:12]}... here, {expected[:12]}... when saved). Pass backbone= with the path of "
            "the original weights, or save the estimator with include_backbone=True (pickle with "
            "embed_backbone=True) to carry them along."
        )


# ------------------------------------------------------------------------ the payload
def network_payload(estimator: "SkillEstimatorBase") -> dict[str, Any]:
    """The trained part of a fitted estimator: blueprint, CPU tensors and the backbone reference."""
    network = estimator.network_
    return {
        "blueprint": network_blueprint(network, estimator._network_structure()),
        "state": adapter_state(network),
        "backbone": dict(estimator._backbone_reference),
    }


def restore_network(estimator: "SkillEstimatorBase", payload: dict[str, Any], where: str, backbone: Backbone | None = None) -> None:
    """Set ``network_`` and ``tokenizer_`` of ``estimator`` from a payload (device from ``device_``)."""
    reference = payload["backbone"]
    if backbone is None:
        backbone = estimator._load_backbone(revision=reference.get("revision"))
        check_backbone_hash(backbone, reference.get("sha256"), estimator.backbone, where)
    network = rebuild_network(estimator, backbone, payload["blueprint"], payload["state"], where)
    estimator._configure_backbone(network.backbone)
    estimator.network_ = network.to(estimator.device_)
    estimator.tokenizer_ = backbone.tokenizer


# ----------------------------------------------------------------------- the folder
def fitted_attributes(estimator: "SkillEstimatorBase") -> dict[str, Any]:
    """Public fitted attributes that are stored rather than rebuilt."""
    return {
        key: value for key, value in vars(estimator).items()
        if key.endswith("_") and not key.startswith("_") and key not in DERIVED_ATTRIBUTES
    }


def _versions() -> dict[str, str]:
    import sklearn
    import transformers

    from .. import __version__

    return {"skillfit": __version__, "torch": torch.__version__, "transformers": transformers.__version__, "scikit-learn": sklearn.__version__}


def save_folder(estimator: "SkillEstimatorBase", path: str | os.PathLike, include_backbone: bool, scores: dict | None) -> Path:
    """Write ``estimator`` into the folder ``path`` (created if needed)."""
    from safetensors.torch import save_file

    from ._model_card import model_card

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    payload = network_payload(estimator)
    config = {
        "format_version": FORMAT_VERSION,
        "estimator": type(estimator).__name__,
        "params": to_json(estimator.get_params(deep=False), "a parameter"),
        "fitted": to_json(fitted_attributes(estimator), "a fitted attribute"),
        "network": payload["blueprint"],
        "backbone": {**payload["backbone"], "embedded": include_backbone},
        "scores": to_json(scores, "scores"),
        "versions": _versions(),
    }
    save_file(payload["state"], str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    if include_backbone:
        _save_backbone(estimator, folder / BACKBONE_DIR)
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    (folder / "README.md").write_text(model_card(estimator, config))
    return folder


def _bare_backbone(network: torch.nn.Module) -> torch.nn.Module:
    """A module tree of the network's backbone with every skill layer replaced by its base layer."""
    from ..backbones import _own_module_tree

    bare = _own_module_tree(network.backbone)
    for name, layer in list(skill_layers(bare)):
        parent_name, _, child = name.rpartition(".")
        setattr(bare.get_submodule(parent_name) if parent_name else bare, child, layer.base_layer)
    return bare


def _save_backbone(estimator: "SkillEstimatorBase", folder: Path) -> None:
    from safetensors.torch import save_model

    folder.mkdir(exist_ok=True)
    bare = _bare_backbone(estimator.network_)
    bare.config.save_pretrained(folder)
    estimator.tokenizer_.save_pretrained(folder)
    save_model(bare, str(folder / BACKBONE_WEIGHTS_FILE))


def _load_embedded_backbone(estimator: "SkillEstimatorBase", folder: Path) -> Backbone:
    from safetensors.torch import load_model
    from transformers import AutoConfig, AutoTokenizer

    from ..backbones import _model_class, frozen_with_pad_token, used_part

    config = AutoConfig.from_pretrained(folder)
    kind = estimator._backbone_kind
    model, decoder_only = used_part(kind, _model_class(kind, str(folder), config).from_config(config), config)
    load_model(model, str(folder / BACKBONE_WEIGHTS_FILE), strict=True)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    frozen_with_pad_token(model, tokenizer)
    return Backbone(
        model=model.to(estimator.device_), tokenizer=tokenizer, config=config, decoder_only=decoder_only,
        source=str(folder), _sha256=lambda: frozen_weights_sha256(model),
    )


def read_config(path: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """The folder and its parsed config; a clear error when it is not a skillfit folder."""
    folder = Path(path)
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise ValueError(
            f"{str(folder)!r} is not a folder written by save_pretrained: it has no {CONFIG_FILE}. "
            "Pass the folder that save_pretrained(path) created."
        )
    config = json.loads(config_path.read_text())
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{str(folder)!r} was saved in format version {version!r}, newer than this skillfit reads "
            f"({FORMAT_VERSION}); upgrade skillfit."
        )
    return folder, config


def load_folder(cls: type, path: str | os.PathLike, device: str | None, backbone: str | None) -> "SkillEstimatorBase":
    """Rebuild an estimator from a folder written by :func:`save_folder`."""
    from safetensors.torch import load_file

    from ..backbones import resolve_device
    from . import ESTIMATORS

    folder, config = read_config(path)
    saved_class = ESTIMATORS.get(config["estimator"])
    if saved_class is None or not issubclass(saved_class, cls):
        raise ValueError(
            f"{str(folder)!r} holds a {config['estimator']}, not a {cls.__name__}; load it with "
            f"{config['estimator']}.from_pretrained(path)."
        )
    _warn_on_version_change(config.get("versions", {}), folder)
    params = from_json(config["params"])
    if device is not None:
        params["device"] = device
    if backbone is not None:
        params["backbone"] = backbone
    estimator = saved_class(**params)
    estimator._validate_params()
    for key, value in from_json(config["fitted"]).items():
        setattr(estimator, key, value)
    if device is None and str(estimator.device).startswith("cuda") and not torch.cuda.is_available():
        warnings.warn(
            f"{str(folder)!r} was saved with device={estimator.device!r}, but CUDA is not available here; "
            "it will predict on the CPU (pass device= to choose).",
            UserWarning,
            stacklevel=3,
        )
        estimator.device_ = torch.device("cpu")
    else:
        estimator.device_ = resolve_device(estimator.device)
    reference = config["backbone"]
    estimator._backbone_reference = {key: reference.get(key) for key in ("name", "revision", "sha256")}
    where = f"the folder {str(folder)!r}"
    embedded = None
    if reference.get("embedded") and backbone is None:
        embedded = _load_embedded_backbone(estimator, folder / BACKBONE_DIR)
        check_backbone_hash(embedded, reference.get("sha256"), str(folder / BACKBONE_DIR), where)
    state = load_file(str(folder / WEIGHTS_FILE))
    payload = {"blueprint": config["network"], "state": state, "backbone": reference}
    restore_network(estimator, payload, where, backbone=embedded)
    estimator._set_routing_attributes()
    return estimator


def _warn_on_version_change(versions: dict[str, str], folder: Path) -> None:
    from .. import __version__

    saved = versions.get("skillfit")
    if saved is not None and saved.split(".")[:2] != __version__.split(".")[:2]:
        warnings.warn(
            f"{str(folder)!r} was saved with skillfit {saved}; this is {__version__}. If predictions look "
            "wrong, load it with the version that saved it.",
            UserWarning,
            stacklevel=3,
        )

