"""Tiny offline backbones for tests: random weights from a config, a word-level tokenizer.

Each kind is built once per machine into the temp directory and reused; nothing is
downloaded.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import transformers
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

FILLER = [f"w{i}" for i in range(40)]
KEYWORDS = ["apple", "banana", "cherry", "delta", "echo", "fox", "golf", "hotel"]
SPECIAL = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "eos_token": "[EOS]"}


def _tokenizer() -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=list(SPECIAL.values()))
    tokenizer.train_from_iterator([" ".join(FILLER + KEYWORDS)], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=64, **SPECIAL)


# Token ids of the special tokens, in the order the tokenizer trainer assigns them.
PAD, UNK, CLS, SEP, EOS = range(5)


def _config(kind: str, vocab_size: int):
    common = dict(vocab_size=vocab_size, pad_token_id=PAD)
    if kind == "bert":
        return transformers.BertConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=64, **common,
        )
    if kind == "distilbert":
        return transformers.DistilBertConfig(
            dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=64, **common,
        )
    if kind == "roberta":
        return transformers.RobertaConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=72, **common,
        )
    if kind == "gpt2":
        return transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=64, bos_token_id=EOS, eos_token_id=EOS, **common)
    if kind == "llama":
        return transformers.LlamaConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
            intermediate_size=64, max_position_embeddings=64, bos_token_id=CLS, eos_token_id=EOS,
            tie_word_embeddings=True, **common,
        )
    if kind == "t5":
        return transformers.T5Config(
            d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2, decoder_start_token_id=PAD, eos_token_id=EOS,
            **common,
        )
    if kind == "bart":
        return transformers.BartConfig(
            d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
            encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64, bos_token_id=CLS, eos_token_id=EOS,
            decoder_start_token_id=EOS, forced_eos_token_id=EOS, **common,
        )
    raise ValueError(kind)


# Generation models are saved with their LM head; AutoModel still loads their base.
MODEL_CLASSES = {
    "t5": transformers.AutoModelForSeq2SeqLM,
    "bart": transformers.AutoModelForSeq2SeqLM,
    "gpt2": transformers.AutoModelForCausalLM,
    "llama": transformers.AutoModelForCausalLM,
}


def tiny_backbone(kind: str = "bert", *, dropout: bool = True) -> str:
    """Path of a saved tiny ``kind`` model with its tokenizer (built on first use).

    ``dropout=False`` zeroes every dropout probability of the config: training is then
    a deterministic function of the data and the routing noise.
    """
    tag = f"skillfit-tiny-{kind}-tf{transformers.__version__}-v2" + ("" if dropout else "-nodropout")
    path = os.path.join(tempfile.gettempdir(), tag)
    if os.path.isdir(path):
        return path
    import torch

    tokenizer = _tokenizer()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        config = _config(kind, len(tokenizer))
        if not dropout:
            for name, value in config.to_dict().items():
                if ("dropout" in name or "pdrop" in name) and isinstance(value, float):
                    setattr(config, name, 0.0)
        model = MODEL_CLASSES.get(kind, transformers.AutoModel).from_config(config)
    staging = tempfile.mkdtemp(prefix=tag + "-")
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    try:
        os.rename(staging, path)
    except OSError:  # another process built it first
        shutil.rmtree(staging, ignore_errors=True)
    return path


def _pretrain_to_copy(model, tokenizer, steps: int = 400) -> None:
    """Full fine-tuning of a tiny encoder-decoder to copy 3-word inputs: a backbone with one skill."""
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        texts = [" ".join(rng.choice(FILLER[:10], size=3)) for _ in range(64)]
        batch = tokenizer(texts, return_tensors="pt")
        labels = torch.cat([batch["input_ids"], torch.full((64, 1), EOS)], dim=1)
        loss = model(**batch, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def copying_t5() -> str:
    """Path of a tiny T5 pretrained to copy its input (built and cached on first use)."""
    tag = f"skillfit-tiny-t5copy-tf{transformers.__version__}-v1"
    path = os.path.join(tempfile.gettempdir(), tag)
    if os.path.isdir(path):
        return path
    import torch

    tokenizer = _tokenizer()
    config = transformers.T5Config(
        vocab_size=len(tokenizer), d_model=64, d_kv=32, d_ff=128, num_layers=2, num_heads=2,
        pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = transformers.T5ForConditionalGeneration(config)
        _pretrain_to_copy(model, tokenizer)
    staging = tempfile.mkdtemp(prefix=tag + "-")
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    try:
        os.rename(staging, path)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return path
