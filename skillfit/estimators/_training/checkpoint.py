"""Resumable fits: a training loop's whole state in one file, written atomically.

With ``checkpoint_dir``, ``fit`` and ``adapt`` write a checkpoint at every epoch end
(and every ``checkpoint_every`` steps when set). A later call with the same parameters
and data finds it and resumes from it; on the CPU with ``random_state`` set, the result
is bit for bit the one an uninterrupted call gives.

**One file per fit.** The file's name carries a fingerprint of what decides the result:
skillfit's version, the estimator's class, the call (``fit`` or ``adapt`` and its arguments), the
parameters except those that only say where or how fast to run (``HOW_PARAMETERS``),
the data, and for a warm-started fit or ``adapt`` the fitted model it starts from.
Fits of other parameters or data thus never resume each other's checkpoints, and the
clones of a grid search can share one ``checkpoint_dir``. The fingerprint is also stored
inside the file: a checkpoint that does not match the fit that reads it (a file copied
or renamed, a backbone whose weights changed under the same name) is refused with a
message that names the difference.

**What a checkpoint holds** (safetensors; reading it unpickles nothing):

- tensors ``network.<name>``: every tensor of the network that is not a frozen backbone
  weight (skills, routers, head, masks, task descriptions), as ``save_pretrained``;
- ``optimizer.<i>.<key>``: AdamW's moments and step counts; ``kept.<i>`` and
  ``best.<i>``: the weights an interrupt puts back and the best epoch's (early stopping);
  ``rng.torch`` / ``rng.cuda``: torch's generator states;
- metadata (JSON): the fingerprint, where the loop stands (loop, epoch, step, the
  running loss of the epoch and the shuffle state it drew its batches with), the seed,
  the backbone's SHA-256, ``history_``, the schedule, early stopping and numpy's RNG.

A write goes to a temporary file that is then renamed over the checkpoint, so a crash
mid-write leaves the previous checkpoint whole. In a data-parallel fit rank 0 writes and
rank 0 reads, and sends the bytes to the other ranks (no shared file system needed).
A loop that has ended keeps a last, smaller checkpoint (its final weights, no optimizer),
so calling ``fit`` again returns the trained model without training.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..._version import __version__
from ...backbones import resolve_device
from .distributed import _from_rank_zero, rank_and_world
from .._persistence.folder_format import adapter_state, from_json, prepare_folder, to_json
from ..._precision import dtype_name, resolved_dtype
from .loop_state import LoopPosition
from .loop import TrainingLoop

CHECKPOINT_FORMAT = 1
METADATA_KEY = "skillfit_checkpoint"
# Parameters that say where or how fast a fit runs, or only how it predicts, not what it
# learns: a checkpoint resumes across them (e.g. on other devices, or with more frequent checkpoints).
HOW_PARAMETERS = frozenset({
    "verbose", "device", "n_devices", "distributed_backend", "checkpoint_dir", "checkpoint_every", "callbacks",
    "torch_compile", "gradient_checkpointing", "merged_inference", "embed_backbone",
    # what prediction does with rows of unknown tasks, which training never reads
    "unknown_task_threshold", "route_top_k", "route_temperature",
})


# Parameters that came after checkpoint format 1; their defaults reproduce what came before.
LATER_PARAMETERS = ("lr_schedule", "gradient_accumulation_steps")


# ------------------------------------------------------------------ fingerprints
def data_digest(*parts: Any) -> str:
    """SHA-256 of data parts (lists of texts, arrays of ids or labels, None), by the values' ``repr``."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(b"\x1e")
        if part is None:
            digest.update(b"None")
            continue
        # By value: a list, an array or a Series of the same labels give the same digest.
        items = part if isinstance(part, list) else np.asarray(part, dtype=object).ravel().tolist()
        for item in items:
            item = item.item() if isinstance(item, np.generic) else item
            digest.update(repr(item).encode("utf-8", "surrogatepass"))
            digest.update(b"\x1f")
    return digest.hexdigest()


def model_digest(network: torch.nn.Module, *attributes: Any) -> str:
    """SHA-256 of a fitted model's trained tensors and of some fitted attributes (``tasks_``, ``classes_``)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(adapter_state(network).items()):
        digest.update(f"{name}{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    digest.update(data_digest(*attributes).encode())
    return digest.hexdigest()


def fingerprint(estimator: Any, call: dict[str, Any], data: str, start: str | None) -> dict[str, Any]:
    """What a checkpoint must match: skillfit's version, class, call, parameters (but ``HOW_PARAMETERS``), data and start.

    Parameters added after the format (``LATER_PARAMETERS``) count only away from their
    defaults, so that checkpoints written before they existed keep their names.
    """
    defaults = {field.name: field.default for field in dataclasses.fields(estimator) if field.name in LATER_PARAMETERS}
    params = {key: value for key, value in estimator.get_params(deep=False).items()
              if key not in HOW_PARAMETERS and not (key in defaults and defaults[key] == value)}
    if "backbone_dtype" in params:  # "auto" stands for bfloat16 on a GPU, float32 on the CPU: the dtype counts
        params["backbone_dtype"] = dtype_name(resolved_dtype(params["backbone_dtype"], resolve_device(estimator.device)))
    cls = type(estimator)
    return {
        "format": CHECKPOINT_FORMAT,
        "skillfit": __version__,  # another version may train differently: its fits start afresh
        "estimator": cls.__name__,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "call": to_json(call, "an argument"),
        "params": to_json(params, "a parameter"),
        "data": data,
        "start": start,
    }


def _differences(saved: dict[str, Any], current: dict[str, Any]) -> str:
    """What differs between two fingerprints, in words."""
    said = []
    for section in ("skillfit", "class", "call", "params"):
        old, new = saved.get(section), current.get(section)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            keys = sorted(set(old) | set(new))
            changes = [f"{key}: {old.get(key)!r} in the checkpoint, {new.get(key)!r} here" for key in keys if old.get(key) != new.get(key)]
            said.append(f"{section} differ ({'; '.join(changes[:5])})")
        else:
            said.append(f"{section}: {old!r} in the checkpoint, {new!r} here")
    if saved.get("data") != current.get("data"):
        said.append("the data differ")
    if saved.get("start") != current.get("start"):
        said.append("the fitted model it started from differs")
    if saved.get("format") != current.get("format"):
        said.append(f"it has format {saved.get('format')!r}, this skillfit writes {current.get('format')!r}")
    return "; ".join(said) or "the fingerprints differ"


# ------------------------------------------------------------------ the file
class FitCheckpoints:
    """The checkpoint file of one fit: found and checked when opened, rewritten as training goes.

    Parameters
    ----------
    folder : str or path-like
        ``checkpoint_dir``.
    fingerprint : dict
        From :func:`fingerprint`; names the file and is checked against the one inside.
    every : int or None
        ``checkpoint_every``: also write every this many steps, not only at epoch ends.
    """

    def __init__(self, folder: str | os.PathLike, fingerprint: dict[str, Any], every: int | None = None) -> None:
        self.folder, self.fingerprint, self.every = Path(folder), fingerprint, every
        key = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]
        call = fingerprint["call"]["call"] if isinstance(fingerprint["call"], dict) else "fit"
        self.path = self.folder / f"{fingerprint['estimator']}-{call}-{key}.safetensors"
        self.seed: int | None = None  # the fit's seed, stored so that random_state=None resumes too
        self.backbone_sha256: str | None = None
        self.is_writer = rank_and_world()[0] == 0
        self.saved_meta: dict[str, Any] | None = None
        self.saved_tensors: dict[str, torch.Tensor] | None = None
        self._read()

    def _read(self) -> None:
        """Check the folder, read the checkpoint and refuse one of another fit: on rank 0, for every rank.

        Rank 0 decides and sends the bytes, or the error, to the other ranks, so that
        every rank resumes from the same state or raises the same error.
        """
        data, failure = None, None
        if self.is_writer:
            try:
                prepare_folder(self.folder, "checkpoint_dir")  # before any training is at stake
                self._remove_dead_writes()
                data = self.path.read_bytes() if self.path.is_file() else None
            except Exception as error:
                failure = error
        if rank_and_world()[1] > 1:
            data, failure = _from_rank_zero((data, failure))
        if failure is not None:
            raise failure
        if data is None:
            return
        try:
            meta, tensors = _parse(data)
        except Exception as error:  # safetensors and json raise their own errors on damaged bytes
            raise OSError(
                f"The checkpoint {str(self.path)!r} cannot be read ({type(error).__name__}: {error}); it is damaged "
                "(checkpoints are written whole or not at all, so something else changed it). Delete it to start "
                "this fit afresh."
            ) from None
        if meta.get("fingerprint") != self.fingerprint:
            raise ValueError(
                f"The checkpoint {str(self.path)!r} is of another fit: {_differences(meta.get('fingerprint') or {}, self.fingerprint)}. "
                "It cannot be resumed by this one. Delete the file, or pass another checkpoint_dir."
            )
        self.saved_meta, self.saved_tensors = meta, tensors

    @property
    def found(self) -> bool:
        """Whether a checkpoint of this fit was found."""
        return self.saved_meta is not None

    @property
    def saved_seed(self) -> int | None:
        """The seed the checkpointed fit ran with (None when there is no checkpoint)."""
        return None if self.saved_meta is None else int(self.saved_meta["seed"])

    def _remove_dead_writes(self) -> None:
        """Delete temporary files of this checkpoint left by writers that died (see :func:`write_atomically`)."""
        for temporary in self.folder.glob(f"{self.path.name}.tmp.*"):
            if _abandoned(temporary):
                temporary.unlink(missing_ok=True)

    def check_backbone(self, sha256: str | None) -> None:
        """Refuse to resume on a backbone whose weights are not those the checkpoint trained on (rank 0's)."""
        if rank_and_world()[1] > 1:
            sha256 = _from_rank_zero(sha256)
        self.backbone_sha256 = sha256
        saved = None if self.saved_meta is None else self.saved_meta.get("backbone_sha256")
        if saved is not None and sha256 is not None and saved != sha256:
            raise ValueError(
                f"The checkpoint {str(self.path)!r} was trained on backbone weights with SHA-256 {saved[:12]}…, "
                f"but the backbone loaded now hashes to {sha256[:12]}…: its weights changed under the same name. "
                "Restore the original weights, or delete the checkpoint to start over."
            )

    # -------------------------------------------------------------- the loop's side
    def saved_loop(self, loop_index: int) -> "SavedLoop | None":
        """The saved state for the ``loop_index``-th loop of the fit, or None to train it from the start."""
        if self.saved_meta is None or self.saved_meta["position"]["loop"] < loop_index:
            return None
        return SavedLoop(self, self.saved_meta["position"]["loop"] > loop_index)

    def step_due(self, steps_taken: int) -> bool:
        """Whether a checkpoint is due after ``steps_taken`` steps (``checkpoint_every``)."""
        return self.every is not None and steps_taken % self.every == 0

    def save(self, loop: TrainingLoop) -> None:
        """Write the loop's :meth:`~TrainingLoop.state_dict` (rank 0 only): to a temporary file, then renamed over."""
        if not self.is_writer:
            return
        meta, tensors = to_file_layout(loop.state_dict())
        meta.update(fingerprint=self.fingerprint, seed=self.seed, backbone_sha256=self.backbone_sha256)
        write_atomically(self.path, _serialise(meta, tensors))


class SavedLoop:
    """A checkpoint seen from one loop of the fit: of a later loop (skip this one) or of this one."""

    def __init__(self, checkpoints: FitCheckpoints, of_later_loop: bool) -> None:
        self.checkpoints, self.of_later_loop = checkpoints, of_later_loop
        self.path = checkpoints.path

    def restore(self, loop: TrainingLoop) -> LoopPosition:
        """Put the saved state into ``loop``, whose optimizer and schedule were just made; return where it stands.

        The checkpoint read from disk is let go: it is restored once.
        """
        checkpoints = self.checkpoints
        try:
            return loop.load_state_dict(from_file_layout(checkpoints.saved_meta, checkpoints.saved_tensors))
        except (KeyError, ValueError, RuntimeError) as error:
            raise ValueError(
                f"The checkpoint {str(self.path)!r} does not fit this fit's network or optimizer ({type(error).__name__}: "
                f"{error}); delete it to start this fit afresh."
            ) from error
        finally:
            checkpoints.saved_meta = checkpoints.saved_tensors = None


# ------------------------------------------------------- the loop's state in the file
def to_file_layout(state: dict[str, Any]) -> tuple[dict, dict]:
    """A loop's :meth:`~TrainingLoop.state_dict` as the file's ``(metadata, tensors)`` (format 1)."""
    tensors = {f"network.{name}": tensor for name, tensor in state["network"].items()}
    tensors["rng.torch"] = state["torch_rng"]
    if state.get("cuda_rng") is not None:
        tensors["rng.cuda"] = state["cuda_rng"]
    meta: dict[str, Any] = {
        "position": to_json(state["position"]),
        "history": to_json(state["history"], "history_"),
        "losses": list(state["losses"]),
        "numpy_rng": to_json(state["numpy_rng"]),
        "noise_seed": state["noise_seed"],
        "steps_taken": state["steps_taken"],
        "best_score": to_json(state["best_score"]),
        "kept_task_scores": to_json(state["kept_task_scores"]),
    }
    if "optimizer" not in state:  # a loop that has ended
        return meta, tensors
    scalars: dict[str, Any] = {}
    for index, values in state["optimizer"]["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    meta["optimizer"] = {"param_groups": to_json(state["optimizer"]["param_groups"]), "scalars": to_json(scalars)}
    meta["scheduler"] = to_json(state["scheduler"])
    meta["kept"] = _snapshot_meta(state["kept"], "kept", tensors)
    stopping = state.get("stopping")
    if stopping is not None:
        best = stopping["best_weights"]
        meta["stopping"] = {
            "best_score": to_json(stopping["best_score"]),
            "best_task_scores": to_json(stopping["best_task_scores"]),
            "last_task_scores": to_json(stopping["last_task_scores"]),
            "epochs_without_improvement": stopping["epochs_without_improvement"],
            "best_weights": "kept" if best == "kept" else _snapshot_meta(best, "best", tensors),
        }
    return meta, tensors


def from_file_layout(meta: dict, tensors: dict) -> dict[str, Any]:
    """Invert :func:`to_file_layout`: the state a loop's :meth:`~TrainingLoop.load_state_dict` takes."""
    state: dict[str, Any] = {
        "network": {name[len("network."):]: tensor for name, tensor in tensors.items() if name.startswith("network.")},
        "position": from_json(meta["position"]),
        "history": from_json(meta["history"]),
        "losses": list(meta["losses"]),
        "numpy_rng": from_json(meta["numpy_rng"]),
        "noise_seed": meta["noise_seed"],
        "steps_taken": meta["steps_taken"],
        "best_score": meta["best_score"],
        "kept_task_scores": from_json(meta["kept_task_scores"]),
        "torch_rng": tensors["rng.torch"],
        "cuda_rng": tensors.get("rng.cuda"),
    }
    state["position"]["epoch_rng"] = from_json(state["position"].get("epoch_rng"))
    if "optimizer" not in meta:
        return state
    optimizer_state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            optimizer_state.setdefault(int(index), {})[key] = tensor
    for name, value in from_json(meta["optimizer"]["scalars"]).items():
        index, key = name.split(".", 1)
        optimizer_state.setdefault(int(index), {})[key] = value
    state["optimizer"] = {"state": optimizer_state, "param_groups": from_json(meta["optimizer"]["param_groups"])}
    state["scheduler"] = from_json(meta["scheduler"])
    state["kept"] = _snapshot_values(meta["kept"], tensors)
    saved_stopping = meta.get("stopping")
    if saved_stopping is not None:
        best = saved_stopping["best_weights"]
        state["stopping"] = {
            "best_score": saved_stopping["best_score"],
            "best_task_scores": from_json(saved_stopping["best_task_scores"]),
            "last_task_scores": from_json(saved_stopping["last_task_scores"]),
            "epochs_without_improvement": saved_stopping["epochs_without_improvement"],
            "best_weights": "kept" if best == "kept" else _snapshot_values(best, tensors),
        }
    return state


def _snapshot_meta(snapshot: dict | None, prefix: str, tensors: dict) -> dict | None:
    if snapshot is None:
        return None
    for index, value in enumerate(snapshot["values"]):
        tensors[f"{prefix}.{index}"] = value
    return {"description": snapshot["description"], "prefix": prefix, "count": len(snapshot["values"])}


def _snapshot_values(meta: dict | None, tensors: dict) -> dict | None:
    if meta is None:
        return None
    return {"description": meta["description"], "values": [tensors[f"{meta['prefix']}.{index}"] for index in range(meta["count"])]}


# ------------------------------------------------------------------ bytes on disk
def _serialise(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    # Own CPU copies: safetensors refuses tensors that share memory, and device tensors.
    plain = {name: tensor.detach().to("cpu", copy=True).contiguous() for name, tensor in tensors.items()}
    return save(plain, metadata={METADATA_KEY: json.dumps(meta)})


def _parse(data: bytes) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    from safetensors.torch import load

    tensors = load(data)
    header_size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + header_size])
    return json.loads(header["__metadata__"][METADATA_KEY]), tensors


# A temporary file older than this is abandoned whoever wrote it (a write takes seconds).
ABANDONED_AFTER_SECONDS = 3600


def _abandoned(temporary: Path) -> bool:
    """Whether a temporary checkpoint file was left by a dead writer: one of this host whose process is
    gone, or any that has not changed for ``ABANDONED_AFTER_SECONDS``."""
    try:
        if time.time() - temporary.stat().st_mtime > ABANDONED_AFTER_SECONDS:
            return True
    except FileNotFoundError:
        return False
    parts = temporary.name.split(".tmp.", 1)[1].split("@")  # pid@host@random
    if os.name != "posix" or len(parts) < 3 or parts[1] != socket.gethostname() or not parts[0].isdigit():
        return False
    try:
        os.kill(int(parts[0]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file renamed over it: ``path`` is always whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A new file of a unique name (never a link followed), named by host and process for the clean-up.
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.tmp.{os.getpid()}@{socket.gethostname()}@")
    temporary = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        descriptor = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
