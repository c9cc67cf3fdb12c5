"""The folder format of a fitted estimator, and the payload that folders and pickles share.

A fitted estimator is three things: its frozen backbone (by reference: name, revision
and a SHA-256 of the weights), the structure of its network (the skill configuration
of every adapted layer and the network's own ``structure()``) and the tensors it
trained. A folder holds::

    skillfit_config.json        parameters, fitted attributes, structure, backbone reference, versions
    skillfit_model.safetensors  every trained tensor (skills, routers, head, label masks)
    backbone/                   only with include_backbone=True: config, tokenizer, weights
    README.md                   a model card

Loading reads JSON and safetensors only; nothing is unpickled. Every function here takes
data (a network, a reference, dicts); which estimator attributes go in and which class
comes out is decided in ``_persistence/saving.py``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..._warnings import warn_user
from ..._version import __version__
from ...backbones import Backbone, load_backbone_of_kind, save_bare_backbone
from ..._precision import dtype_name, reload_dtype, saved_quantization
from ...skills import SkillConfig, inject_skills, skill_layers
from .._task_free.task_identifier import TaskIdentifier

FORMAT_VERSION = 1
CONFIG_FILE = "skillfit_config.json"
WEIGHTS_FILE = "skillfit_model.safetensors"
BACKBONE_DIR = "backbone"
CARD_FILE = "README.md"
# Sections of the config file that loading reads.
REQUIRED_SECTIONS = ("format_version", "estimator", "params", "fitted", "network", "backbone")


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
    if isinstance(value, (torch.device, os.PathLike)):
        return os.fspath(value) if isinstance(value, os.PathLike) else str(value)
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


def network_payload(network: torch.nn.Module, backbone_reference: dict[str, Any]) -> dict[str, Any]:
    """The trained part of a network: a JSON-ready blueprint, CPU tensors and the backbone reference.

    The blueprint holds each skill layer's :class:`SkillConfig`, which parameters train,
    and the network's own ``structure()``.
    """
    return {
        "blueprint": {
            "layers": {name: dataclasses.asdict(layer.config) for name, layer in skill_layers(network.backbone)},
            "trainable": [name for name, param in network.named_parameters() if param.requires_grad],
            "structure": network.structure(),
            "task_free": task_free_blueprint(network),
        },
        "state": adapter_state(network),
        "backbone": dict(backbone_reference),
    }


def task_free_blueprint(network: torch.nn.Module) -> dict[str, Any]:
    """What prediction without task ids keeps besides skills: routing prototypes, the identifier's shape."""
    identifier = getattr(network, "task_identifier", None)
    return {
        "prototypes": any(layer.route_prototypes is not None for _, layer in skill_layers(network.backbone)),
        "identifier": None if identifier is None else list(identifier.means.shape),
    }


def restore_task_free(network: torch.nn.Module, blueprint: dict[str, Any] | None) -> None:
    """Give a rebuilt network the buffers :func:`task_free_blueprint` describes (values loaded afterwards).

    Folders saved before they existed have no such section, and get none.
    """
    if not blueprint:
        return
    if blueprint.get("prototypes"):
        for _, layer in skill_layers(network.backbone):
            layer.attach_prototypes()
    if blueprint.get("identifier"):
        network.task_identifier = TaskIdentifier(*blueprint["identifier"])


def rebuild_network(
    network_class: type, backbone: Backbone, blueprint: dict, state: dict, *, backbone_name: str, where: str
) -> torch.nn.Module:
    """Put the blueprint's skill layers into ``backbone``, build the network and load ``state``."""
    configs = {name: SkillConfig(**config) for name, config in blueprint["layers"].items()}
    pattern = "|".join(re.escape(name) for name in configs)
    try:
        context = inject_skills(backbone.model, configs.__getitem__, pattern)
        network = network_class.from_structure(backbone, context, blueprint["structure"])
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(
            f"The skills in {where} do not fit the backbone {backbone_name!r}: {error} "
            "Load it with the backbone it was trained with."
        ) from error
    restore_task_free(network, blueprint.get("task_free"))
    expected_tensors = adapter_state(network)
    expected = set(expected_tensors)
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"The weights in {where} do not match the network rebuilt from its config "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); the folder may be damaged or from "
            "another skillfit version."
        )
    not_finite = next((key for key in sorted(state) if state[key].is_floating_point() and not bool(state[key].isfinite().all())), None)
    if not_finite is not None:
        raise ValueError(
            f"The weights in {where} are damaged: tensor {not_finite!r} holds NaN or infinite values. Save the "
            "model again, or copy the folder anew."
        )
    retyped = next((key for key in sorted(state) if state[key].dtype != expected_tensors[key].dtype), None)
    if retyped is not None:
        raise ValueError(
            f"The weights in {where} are damaged: tensor {retyped!r} is {state[retyped].dtype}, but the network "
            f"keeps it as {expected_tensors[retyped].dtype}. Save the model again, or copy the folder anew."
        )
    try:
        network.load_state_dict(state, strict=False)
    except RuntimeError as error:
        details = "; ".join(line.strip() for line in str(error).splitlines()[1:3])
        raise ValueError(
            f"The weights in {where} do not fit the backbone {backbone_name!r} ({details}). "
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


def load_network(
    payload: dict[str, Any], *, network_class: type, kind: str, backbone_name: str, device: torch.device, where: str,
    backbone: Backbone | None = None, trust_remote_code: bool = False,
) -> tuple[torch.nn.Module, Any]:
    """The network and tokenizer of a payload, on ``device``.

    The backbone is loaded by ``backbone_name`` at the saved revision and checked against
    the saved hash, unless a loaded ``backbone`` is given (one embedded in a folder).
    """
    reference = payload["backbone"]
    if backbone is None:
        dtype = reload_dtype(reference.get("dtype"), device, where)
        backbone = load_backbone_of_kind(
            kind, backbone_name, device, revision=reference.get("revision"), trust_remote_code=trust_remote_code,
            dtype=dtype, quantization=saved_quantization(reference.get("quantization"), where),
        )
        if dtype_name(dtype) == reference.get("dtype", "float32"):  # a fallback's weights cannot match the hash
            check_backbone_hash(backbone, reference.get("sha256"), backbone_name, where)
    network = rebuild_network(
        network_class, backbone, payload["blueprint"], payload["state"], backbone_name=backbone_name, where=where
    )
    return network.to(device), backbone.tokenizer


# ----------------------------------------------------------------------- the folder
def library_versions() -> dict[str, str]:
    """Versions of skillfit and the libraries a saved model depends on."""
    import sklearn
    import transformers

    return {"skillfit": __version__, "torch": torch.__version__, "transformers": transformers.__version__, "scikit-learn": sklearn.__version__}


def check_folder_path(path: Any, what: str) -> Path:
    """``path`` as a Path; TypeError for a non-path, ValueError for an empty one or one no file system can hold."""
    if not isinstance(path, (str, os.PathLike)) or isinstance(os.fspath(path), bytes):
        raise TypeError(f"{what} must be a folder path (str or path-like); got {path!r}.")
    text = os.fspath(path)
    if not text.strip():
        raise ValueError(f"{what} is an empty path; pass a folder.")
    try:
        text.encode("utf-8")
        if "\0" in text:
            raise ValueError("it holds a NUL character")
    except (UnicodeEncodeError, ValueError) as error:  # an unpaired surrogate, a NUL
        raise ValueError(f"{what}={text!r} cannot name a folder on this system ({error}); pass another path.") from None
    return Path(text)


def prepare_folder(path: Any, what: str) -> Path:
    """Create the folder ``path`` (``what`` names it in messages, e.g. ``"checkpoint_dir"``) and check it takes files."""
    folder = check_folder_path(path, what)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{what}={str(folder)!r} is a file, not a folder; pass a folder path.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(f"{what}={str(folder)!r} cannot be created ({error}); pass a folder you can write.") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"{what}={str(folder)!r} is not writable; pass a folder you can write.")
    return folder


def write_folder(
    path: str | os.PathLike, config: dict[str, Any], state: dict[str, torch.Tensor], card: str,
    embedded_backbone: tuple[torch.nn.Module, Any] | None = None,
) -> Path:
    """Write ``config`` (JSON), ``state`` (safetensors), the model card and, if given, the bare backbone."""
    from safetensors.torch import save_file

    folder = prepare_folder(path, "path")
    save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    if embedded_backbone is not None:
        save_bare_backbone(*embedded_backbone, folder / BACKBONE_DIR)
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    (folder / CARD_FILE).write_text(card)
    return folder


def read_config(path: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """The folder and its parsed config; a clear error when it is not a skillfit folder."""
    if not isinstance(path, (str, os.PathLike)) or isinstance(os.fspath(path), bytes):
        raise TypeError(f"path must be the folder that save_pretrained wrote (a str or path-like); got {path!r}.")
    if not os.fspath(path).strip():
        raise ValueError("path is empty; pass the folder that save_pretrained(path) wrote.")
    folder = Path(path)
    config_path = folder / CONFIG_FILE
    try:
        is_file = config_path.is_file()
    except (OSError, ValueError) as error:  # a name the file system cannot hold (an unpaired surrogate, a NUL)
        raise ValueError(f"path {os.fspath(path)!r} cannot name a folder on this system ({error}); pass the "
                         "folder that save_pretrained(path) wrote.") from None
    if not is_file:
        raise ValueError(
            f"{str(folder)!r} is not a folder written by save_pretrained: it has no {CONFIG_FILE}. "
            "Pass the folder that save_pretrained(path) created."
        )
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{str(config_path)!r} is not valid JSON ({error}); the folder is damaged. Save the model again, "
            "or copy the folder anew."
        ) from error
    missing = [key for key in REQUIRED_SECTIONS if not isinstance(config, dict) or key not in config]
    if missing:
        raise ValueError(
            f"{str(config_path)!r} lacks the section(s) {missing} that save_pretrained writes; the file is "
            "damaged or was not written by skillfit. Save the model again, or copy the folder anew."
        )
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{str(folder)!r} was saved in format version {version!r}, newer than this skillfit reads "
            f"({FORMAT_VERSION}); upgrade skillfit."
        )
    _warn_on_version_change(config.get("versions", {}), folder)
    return folder, config


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The trained tensors of a folder; an OSError naming the file when it is missing or damaged."""
    return read_safetensors(folder / WEIGHTS_FILE)


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; an OSError naming the file when it is missing or damaged."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} is missing; the folder is incomplete. Save the model again.")
    try:
        return load_file(str(path))
    except Exception as error:  # safetensors raises its own SafetensorError on truncated or damaged files
        raise OSError(
            f"{str(path)!r} cannot be read ({type(error).__name__}: {error}); it is truncated or damaged. "
            "Save the model again, or copy the folder anew."
        ) from error


def _warn_on_version_change(versions: dict[str, str], folder: Path) -> None:
    saved = versions.get("skillfit") if isinstance(versions, dict) else None
    if isinstance(saved, str) and saved.split(".")[:2] != __version__.split(".")[:2]:
        warn_user(
            f"{str(folder)!r} was saved with skillfit {saved}; this is {__version__}. If predictions look "
            "wrong, load it with the version that saved it.",
            UserWarning,
        )
