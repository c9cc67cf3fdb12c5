"""Tiny offline backbones for tests: random weights from a config, a word-level tokenizer.

Each kind is built once per machine into the temp directory and reused; nothing is
downloaded.
"""

from __future__ import annotations

import os
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
