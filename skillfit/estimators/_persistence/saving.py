"""Saving and sharing, on the estimator's side: folders, pickles and peft exports.

:class:`PersistenceMixin` decides what of an estimator is stored (its parameters, its
public fitted attributes, its network's payload) and how a loaded one is put back
together. The formats themselves live in ``_persistence/folder_format.py`` (folders and payloads),
``_persistence/peft_export.py`` (peft adapters) and ``_persistence/model_card.py``; they take data, not
estimators.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch

from ..._warnings import warn_user
from ...backbones import load_bare_backbone, resolve_device
from ..._precision import reload_dtype
from .._concurrency import reads_model
from .peft_export import ExportSource, export_peft
from .folder_format import (
    BACKBONE_DIR,
    CONFIG_FILE,
    FORMAT_VERSION,
    check_backbone_hash,
    from_json,
    library_versions,
    load_network,
    network_payload,
    read_config,
    read_weights,
    to_json,
    write_folder,
)
from .._training.distributed import is_main_process
from .folder_checks import check_fitted_section, check_network_matches
from .model_card import model_card
from .._registry import estimator_class
from .._runtime import cpu_copy, quiet_libraries

# Fitted attributes rebuilt from the network on load rather than stored.
DERIVED_ATTRIBUTES = {
    "network_", "tokenizer_", "device_",
    "routing_weights_", "layer_routing_weights_", "gate_weights_", "layer_gate_weights_",
}


def fitted_attributes(estimator: Any) -> dict[str, Any]:
    """Public fitted attributes that are stored rather than rebuilt."""
    return {
        key: value for key, value in vars(estimator).items()
        if key.endswith("_") and not key.startswith("_") and key not in DERIVED_ATTRIBUTES
    }


class PersistenceMixin:
    """``save_pretrained``, ``from_pretrained``, ``export_peft`` and pickling of a skillfit estimator."""

    @reads_model
    def save_pretrained(
        self, path: str | os.PathLike, *, include_backbone: bool = False, scores: dict | None = None
    ) -> None:
        """Write the fitted estimator into a folder that :meth:`from_pretrained` reads.

        The folder holds a JSON config (parameters, fitted attributes, the structure
        of every skill layer, the backbone's name, revision and weight hash, library
        versions), the trained tensors as safetensors, and a ``README.md`` model card.
        Nothing in it is pickled.

        Parameters
        ----------
        path : str or path-like
            The folder; created if needed, files of the same names overwritten.
        include_backbone : bool, default=False
            Also write the frozen backbone (config, tokenizer, weights) into
            ``path/backbone``, so loading needs nothing else. By default the backbone
            is stored by reference and loaded by name, then checked against the hash.
        scores : dict, optional
            Scores to show in the model card, e.g. ``{"accuracy": {"task": 0.9}}``;
            validation scores of ``fit`` are shown when known.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the estimator is not fitted.
        TypeError
            If ``scores`` is not a dict or ``include_backbone`` not a bool.

        See Also
        --------
        skillfit.PolyClassifier.from_pretrained : Load the folder back.
        skillfit.PolyClassifier.export_peft : Write a standard peft adapter instead.
        skillfit.backbones.backbone_cache_info : What the cache of loaded backbones holds.

        Notes
        -----
        In a process group (``torchrun``, ``accelerate launch``), only rank 0 writes;
        the other ranks return at once, so the call may stand on every rank.

        The folder layout follows the ``save_pretrained`` / ``from_pretrained``
        convention of Hugging Face Transformers [1]_ (``docs/saving.md``).

        References
        ----------
        .. [1] Wolf et al. "Transformers: State-of-the-Art Natural Language Processing."
           EMNLP 2020 System Demonstrations (arXiv:1910.03771).

        Examples
        --------
        >>> import os
        >>> import tempfile
        >>> from skillfit import PolyClassifier
        >>> from skillfit.datasets import make_tiny_backbone
        >>> X = [("a great film", "movies"), ("a dull plot", "movies"),
        ...      ("win a free prize now", "sms"), ("see you at noon", "sms")]
        >>> y = ["pos", "neg", "spam", "ham"]
        >>> clf = PolyClassifier(backbone=make_tiny_backbone(), max_epochs=1, random_state=0).fit(X, y)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     clf.save_pretrained(folder, scores={"accuracy": 0.5})
        ...     sorted(os.listdir(folder))
        ['README.md', 'skillfit_config.json', 'skillfit_model.safetensors']
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     clf.save_pretrained(folder, include_backbone=True)
        ...     sorted(os.listdir(folder))
        ['README.md', 'backbone', 'skillfit_config.json', 'skillfit_model.safetensors']
        """
        self._check_fitted()
        if scores is not None and not isinstance(scores, dict):
            raise TypeError(
                f"scores must be a dict such as {{'accuracy': {{task: 0.9}}}} or {{'accuracy': 0.9}}; got {type(scores).__name__}."
            )
        if not isinstance(include_backbone, bool):
            raise TypeError(f"include_backbone must be True or False; got {include_backbone!r}.")
        if include_backbone and self._backbone_reference.get("quantization") is not None:
            raise ValueError(
                f"include_backbone=True cannot write a quantized backbone ({self._backbone_reference['quantization']}): "
                "its weights are quantized again from the original ones at load. Save with include_backbone=False "
                "and keep the backbone's original weights where from_pretrained can find them."
            )
        if not is_main_process():
            return
        payload = network_payload(self.network_, self._backbone_reference)
        params, fitted = self.get_params(deep=False), fitted_attributes(self)
        params.pop("callbacks", None)  # objects of the user's code, not the model: from_pretrained takes them anew
        config = {
            "format_version": FORMAT_VERSION,
            "estimator": type(self).__name__,
            "params": to_json(params, "a parameter"),
            "fitted": to_json(fitted, "a fitted attribute"),
            "network": payload["blueprint"],
            "backbone": {**payload["backbone"], "embedded": include_backbone},
            "scores": to_json(scores, "scores"),
            "versions": library_versions(),
        }
        label_mask = getattr(self.network_, "label_mask", None)
        card = model_card(config, params=params, fitted=fitted, label_mask=None if label_mask is None else label_mask.cpu().numpy())
        embedded = (self.network_.backbone, self.tokenizer_) if include_backbone else None
        write_folder(path, config, payload["state"], card, embedded)

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, *, device: str | None = None, backbone: str | None = None,
        trust_remote_code: bool = False,
    ) -> "PersistenceMixin":
        """Load an estimator written by :meth:`save_pretrained`.

        The estimator comes back fitted, with its parameters and fitted attributes;
        its predictions equal those of the saved one. The backbone is loaded by name
        (or from the folder, if it was saved with ``include_backbone=True``) and its
        weights are checked against the saved SHA-256. ``checkpoint_dir`` is reset to
        None.

        Parameters
        ----------
        path : str or path-like
            The folder.
        device : str, optional
            Where to put the model (``"cpu"``, ``"cuda"``, ``"auto"``); the saved
            ``device`` parameter by default.
        backbone : str, optional
            Another location (hub id or folder) of the same backbone weights; the
            weights must hash to the saved SHA-256.
        trust_remote_code : bool, default=False
            Run model code shipped with the backbone's checkpoint. A folder's saved
            value is never used: only the caller can allow running code.

        Returns
        -------
        estimator : object
            Fitted, of the class that was saved.

        Raises
        ------
        ValueError
            If the folder holds an estimator of another class than the one (or a
            subclass of the one) this is called on, or the backbone's weights do not
            match the saved hash.

        See Also
        --------
        skillfit.PolyClassifier.save_pretrained : Write the folder that this reads.
        skillfit.backbones.clear_backbone_cache : Drop the loaded backbones kept for reuse.

        Notes
        -----
        A folder saved with ``device="cuda"`` loads on the CPU, with a warning, where
        CUDA is not available (unless ``device`` is given).


        Examples
        --------
        >>> import tempfile
        >>> import numpy as np
        >>> from skillfit import PolyClassifier
        >>> from skillfit.datasets import make_tiny_backbone
        >>> X = [("a great film", "movies"), ("a dull plot", "movies"),
        ...      ("win a free prize now", "sms"), ("see you at noon", "sms")]
        >>> y = ["pos", "neg", "spam", "ham"]
        >>> clf = PolyClassifier(backbone=make_tiny_backbone(), max_epochs=1, random_state=0).fit(X, y)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     clf.save_pretrained(folder)
        ...     reloaded = PolyClassifier.from_pretrained(folder, device="cpu")
        >>> type(reloaded).__name__, reloaded.tasks_.tolist()
        ('PolyClassifier', ['movies', 'sms'])
        >>> bool(np.allclose(reloaded.predict_proba(X), clf.predict_proba(X)))
        True
        """
        folder, config = read_config(path)
        saved_class = estimator_class(config["estimator"])
        if saved_class is None or not issubclass(saved_class, cls):
            raise ValueError(
                f"{str(folder)!r} holds a {config['estimator']}, not a {cls.__name__}; load it with "
                f"{config['estimator']}.from_pretrained(path)."
            )
        config_path = folder / CONFIG_FILE
        try:
            return cls._load_folder(folder, config, saved_class, device, backbone, trust_remote_code)
        except (KeyError, IndexError, AttributeError, RuntimeError, OverflowError) as error:
            # The folder is data: what cannot be read back from it is damage, reported as such.
            raise ValueError(
                f"{str(config_path)!r} does not describe a model that can be rebuilt ({type(error).__name__}: "
                f"{error}); the folder is damaged or its files come from different models. Save the model "
                "again, or copy the folder anew."
            ) from error

    @classmethod
    def _load_folder(cls, folder, config, saved_class, device, backbone, trust_remote_code):
        """The estimator of a folder whose config is read (``from_pretrained``'s body)."""
        params = from_json(config["params"])
        known = set(saved_class().get_params(deep=False))
        if not isinstance(params, dict) or set(params) - known:
            unknown = sorted(set(params) - known) if isinstance(params, dict) else params
            raise ValueError(f"{str(folder / CONFIG_FILE)!r}: 'params' holds what {saved_class.__name__} has no "
                             f"parameter for ({unknown!r:.100}); the file is damaged. Save the model again.")
        params.update({key: value for key, value in (("device", device), ("backbone", backbone)) if value is not None})
        params["trust_remote_code"] = trust_remote_code
        params["checkpoint_dir"] = None  # a folder of the machine that saved it; set it anew to checkpoint here
        params.pop("callbacks", None)
        estimator = saved_class(**params)
        estimator._validate_params()
        estimator._fitted_params = estimator.get_params(deep=False)
        fitted = from_json(config["fitted"])
        check_fitted_section(fitted, saved_class, folder / CONFIG_FILE)
        for key, value in fitted.items():
            setattr(estimator, key, value)
        estimator.device_ = estimator._device_for_loading(f"{str(folder)!r} was saved with device={estimator.device!r}", device is None)
        reference = config["backbone"]
        estimator._backbone_reference = {key: reference.get(key) for key in ("name", "revision", "sha256", "dtype", "quantization")
                                         if key in reference}
        where = f"the folder {str(folder)!r}"
        embedded = None
        if not isinstance(reference.get("embedded", False), bool):
            raise ValueError(f"{str(folder / CONFIG_FILE)!r} is damaged: 'backbone.embedded' is "
                             f"{reference.get('embedded')!r}, not true or false. Save the model again.")
        if reference.get("embedded") and backbone is None:
            if not (folder / BACKBONE_DIR).is_dir():
                raise FileNotFoundError(f"{str(folder / BACKBONE_DIR)!r} is missing, but {str(folder / CONFIG_FILE)!r} "
                                        "says the backbone is embedded; the folder is incomplete. Save the model again.")
            dtype = reload_dtype(reference.get("dtype"), estimator.device_, where)
            embedded = load_bare_backbone(folder / BACKBONE_DIR, estimator._backbone_kind, estimator.device_, dtype)
            check_backbone_hash(embedded, reference.get("sha256"), str(folder / BACKBONE_DIR), where)
        payload = {"blueprint": config["network"], "state": read_weights(folder), "backbone": reference}
        estimator._restore_network(payload, where, backbone=embedded)
        check_network_matches(estimator, folder / CONFIG_FILE)
        estimator._set_routing_attributes()
        estimator._start_prediction_reports()
        return estimator

    def _device_for_loading(self, saved_where: str, may_fall_back: bool) -> torch.device:
        """The saved ``device``, or the CPU with a warning when it names CUDA and none is here."""
        if may_fall_back and str(self.device).startswith("cuda") and not torch.cuda.is_available():
            warn_user(
                f"{saved_where}, but CUDA is not available here; it will predict on the CPU (pass device= to choose).",
                UserWarning,
            )
            return torch.device("cpu")
        return resolve_device(self.device)

    def _restore_network(self, payload: dict[str, Any], where: str, backbone=None) -> None:
        """Set ``network_`` and ``tokenizer_`` from a payload, on ``device_``."""
        self.network_, self.tokenizer_ = load_network(
            payload, network_class=self._network_class, kind=self._backbone_kind, backbone_name=self.backbone,
            device=self.device_, where=where, backbone=backbone, trust_remote_code=self.trust_remote_code,
        )
        self._configure_backbone(self.network_.backbone)

    @reads_model
    def export_peft(self, path: str | os.PathLike, *, task: Any = None, format: str = "lora") -> None:
        """Write a standard peft adapter that reproduces this estimator on the bare backbone.

        With ``format="lora"``, one task's update in every skill layer (its routed
        mixture of the shared skills, with its exclusive skills) is written as a
        LoRA [1]_ adapter; with
        ``format="poly"``, the shared skills and every task's routing are written in
        peft's POLY format [2]_. The adapter then loads with the peft library on the
        backbone alone, without skillfit.

        Parameters
        ----------
        path : str or path-like
            The adapter folder (``adapter_config.json``, ``adapter_model.safetensors``).
        task : task id, optional
            With ``format="lora"``: the task whose routing and exclusive skills are
            folded into one LoRA (C-Poly stacks the shared and exclusive ranks).
            Required when more than one task was fitted; must be unset with
            ``format="poly"``.
        format : {"lora", "poly"}, default="lora"
            ``"poly"`` writes peft's POLY format with every task (Poly and Poly-S).

        Raises
        ------
        ValueError
            If ``task`` is missing or not a fitted task (``"lora"``), given with
            ``"poly"``, if ``"poly"`` is asked of skills it cannot hold (exclusive or
            private ones), or for PEMT, whose task-description token no adapter holds.

        See Also
        --------
        skillfit.PolyClassifier.save_pretrained : Save the whole estimator, every task included.
        skillfit.skills.SkillLinear.delta_weight : The weight update of a skill layer for a task.

        Notes
        -----
        Classifiers also write ``skillfit_head.safetensors`` and
        ``skillfit_head.json`` (pooling, labels, the task's label mask): peft holds
        the backbone's adapter, the head reads its hidden states. See
        ``docs/saving.md``. In a process group, only rank 0 writes.

        References
        ----------
        .. [1] Hu, Shen, Wallis, Allen-Zhu, Li, Wang, Wang, Chen. "LoRA: Low-Rank
           Adaptation of Large Language Models." ICLR 2022 (arXiv:2106.09685).
        .. [2] Ponti, Sordoni, Bengio, Reddy. "Combining Parameter-efficient Modules for
           Task-level Generalisation." EACL 2023 (arXiv:2202.13914).

        Examples
        --------
        >>> import json
        >>> import os
        >>> import tempfile
        >>> from skillfit import PolyClassifier
        >>> from skillfit.datasets import make_tiny_backbone
        >>> X = [("a great film", "movies"), ("a dull plot", "movies"),
        ...      ("win a free prize now", "sms"), ("see you at noon", "sms")]
        >>> y = ["pos", "neg", "spam", "ham"]
        >>> clf = PolyClassifier(backbone=make_tiny_backbone(), max_epochs=1, random_state=0).fit(X, y)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     clf.export_peft(folder, task="movies")
        ...     with open(os.path.join(folder, "adapter_config.json")) as file:
        ...         peft_type = json.load(file)["peft_type"]
        ...     files = sorted(os.listdir(folder))
        >>> peft_type
        'LORA'
        >>> files
        ['adapter_config.json', 'adapter_model.safetensors', 'skillfit_head.json', 'skillfit_head.safetensors']

        Every task at once, in peft's POLY format, read back with peft:

        >>> from peft import PeftConfig
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     clf.export_peft(folder, format="poly")
        ...     config = PeftConfig.from_pretrained(folder)
        >>> config.n_tasks, config.n_skills
        (2, 8)
        """
        self._check_fitted()
        if not is_main_process():
            return
        source = ExportSource(
            network=self.network_, tasks=self.tasks_, classes=getattr(self, "classes_", None),
            backbone_name=self.backbone, backbone_revision=self._backbone_reference.get("revision"),
            backbone_kind=self._backbone_kind, decoder_only=getattr(self, "decoder_only_", False),
            estimator_name=type(self).__name__,
        )
        export_peft(source, path, task=task, format=format)

    # -------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        """Pickle the trained tensors on the CPU; the backbone by reference unless ``embed_backbone``."""
        state = super().__getstate__()
        network = state.get("network_")
        if network is None:
            return state
        if not self.embed_backbone and hasattr(self, "_backbone_reference"):
            payload = network_payload(network, self._backbone_reference)
            # By reference only when every trained tensor is a skill, head or mask (not, e.g., a peft layer).
            if all(name in payload["state"] for name, param in network.named_parameters() if param.requires_grad):
                state = {key: value for key, value in state.items() if key not in ("network_", "tokenizer_")}
                state["_network_payload"] = payload
                return state
        if any(p.device.type != "cpu" for p in network.parameters()):
            state["network_"] = cpu_copy(network)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        for field in dataclasses.fields(self):  # parameters added since the pickle was made take their defaults
            state.setdefault(field.name, field.default)
        payload = state.pop("_network_payload", None)
        super().__setstate__(state)
        if "network_" in state or payload is not None:
            self._start_prediction_reports()
        device = getattr(self, "device_", None)
        if device is not None and device.type == "cuda" and not torch.cuda.is_available():
            warn_user(
                f"{type(self).__name__} was fitted on {device}, but CUDA is not available here; "
                "it will predict on the CPU.",
                UserWarning,
            )
            self.device_ = device = torch.device("cpu")
        if payload is not None:
            with quiet_libraries(getattr(self, "verbose", 0)):
                self._restore_network(payload, "the unpickled estimator")
        elif device is not None and device.type == "cuda":
            self.network_.to(device)
