"""Tiny offline backbones for tests: random weights from a config, a word-level tokenizer.

Each kind is built once per machine into the temp directory and reused; nothing is
downloaded.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import transformers
from transformers import PreTrainedTokenizerFast

from skillfit.datasets import _tiny as tiny
from skillfit.datasets import make_tiny_backbone

FILLER = [f"w{i}" for i in range(40)]
KEYWORDS = ["apple", "banana", "cherry", "delta", "echo", "fox", "golf", "hotel"]


def _tokenizer() -> PreTrainedTokenizerFast:
    return tiny._tokenizer(FILLER + KEYWORDS, max_positions=64)


def tiny_backbone(kind: str = "bert", *, dropout: bool = True) -> str:
    """Path of a saved tiny ``kind`` model whose tokenizer knows FILLER and KEYWORDS (built on first use).

    ``dropout=False`` zeroes every dropout probability of the config: training is then
    a deterministic function of the data and the routing noise. The folder name is the
    one the saved test fixtures recorded.
    """
    tag = f"skillfit-tiny-{kind}-tf{transformers.__version__}-v2" + ("" if dropout else "-nodropout")
    folder = os.path.join(tempfile.gettempdir(), tag)
    return make_tiny_backbone(kind, vocabulary=FILLER + KEYWORDS, max_positions=64, dropout=dropout, folder=folder)


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
