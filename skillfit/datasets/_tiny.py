"""Tiny randomly initialised transformers with a word-level tokenizer, built offline.

They let examples, doctests and users' own pipeline tests run in seconds with no model
hub: the model learns nothing useful, but every code path of a real backbone runs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from typing import Literal

TINY_KINDS = ("bert", "distilbert", "roberta", "gpt2", "llama", "t5", "bart")
SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "eos_token": "[EOS]"}
# Token ids of the special tokens, in the order the tokenizer trainer assigns them.
PAD, UNK, CLS, SEP, EOS = range(5)
# The default vocabulary: words seen at least twice in the demo tasks, the most frequent first.
_DEMO_VOCABULARY_SIZE = 3000


def _tokenizer(vocabulary: Sequence[str] | None, max_positions: int = 64):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    special = list(SPECIAL_TOKENS.values())
    if vocabulary is None:
        from ._demo import load_demo_text2text

        texts = load_demo_text2text(split="train").frame["text"]
        trainer = trainers.WordLevelTrainer(vocab_size=_DEMO_VOCABULARY_SIZE, min_frequency=2, special_tokens=special)
        tokenizer.train_from_iterator(texts, trainer=trainer)
    else:
        trainer = trainers.WordLevelTrainer(special_tokens=special)
        tokenizer.train_from_iterator([" ".join(vocabulary)], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=max_positions, **SPECIAL_TOKENS)


def _config(kind: str, vocab_size: int, max_positions: int):
    import transformers

    common = dict(vocab_size=vocab_size, pad_token_id=PAD)
    if kind == "bert":
        return transformers.BertConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=max_positions, **common,
        )
    if kind == "distilbert":
        return transformers.DistilBertConfig(
            dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=max_positions, **common,
        )
    if kind == "roberta":
        return transformers.RobertaConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=max_positions + 8, **common,
        )
    if kind == "gpt2":
        return transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=max_positions, bos_token_id=EOS, eos_token_id=EOS, **common)
    if kind == "llama":
        return transformers.LlamaConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
            intermediate_size=64, max_position_embeddings=max_positions, bos_token_id=CLS, eos_token_id=EOS,
            tie_word_embeddings=True, **common,
        )
    if kind == "t5":
        return transformers.T5Config(
            d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2, decoder_start_token_id=PAD, eos_token_id=EOS,
            **common,
        )
    # bart
    return transformers.BartConfig(
        d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=max_positions, bos_token_id=CLS, eos_token_id=EOS,
        decoder_start_token_id=EOS, forced_eos_token_id=EOS, **common,
    )


def _model_class(kind: str):
    import transformers

    # Generation models are saved with their LM head; AutoModel still loads their base.
    if kind in ("t5", "bart"):
        return transformers.AutoModelForSeq2SeqLM
    if kind in ("gpt2", "llama"):
        return transformers.AutoModelForCausalLM
    return transformers.AutoModel


def _default_folder(kind: str, vocabulary: Sequence[str] | None, max_positions: int, dropout: bool) -> str:
    import transformers

    words = "demo" if vocabulary is None else hashlib.sha256("\n".join(vocabulary).encode()).hexdigest()[:12]
    tag = f"skillfit-tiny-{kind}-{words}-{max_positions}-tf{transformers.__version__}" + ("" if dropout else "-nodropout")
    return os.path.join(tempfile.gettempdir(), tag)


def make_tiny_backbone(
    kind: Literal["bert", "distilbert", "roberta", "gpt2", "llama", "t5", "bart"] = "bert",
    *,
    vocabulary: Sequence[str] | None = None,
    max_positions: int = 128,
    dropout: bool = True,
    folder: str | os.PathLike | None = None,
) -> str:
    """Build a tiny random transformer with a word-level tokenizer and return its folder.

    The model has two layers of width 32 and random weights (seeded, so every call
    builds the same model); its tokenizer knows one token per word. It is saved like a
    checkpoint from the hub, so any estimator takes its folder as ``backbone``. Use it
    to try the API, run examples and test pipelines offline in seconds: it learns
    little, but every code path of a real backbone of its architecture runs. The
    folder is built on first use and reused afterwards.

    Parameters
    ----------
    kind : {"bert", "distilbert", "roberta", "gpt2", "llama", "t5", "bart"}, default="bert"
        Architecture: encoders for classifiers, decoder-only models (``"gpt2"``,
        ``"llama"``) for both estimator kinds, encoder-decoders (``"t5"``, ``"bart"``)
        for the Seq2Seq estimators.
    vocabulary : sequence of str, optional
        Words of the tokenizer (any other word becomes ``[UNK]``). By default, at most
        3,000 words seen at least twice in the training split of
        :func:`load_demo_text2text` (the demo tasks' texts and the dialogue lines).
    max_positions : int, default=128
        Longest input in tokens (position embeddings of the model, ``model_max_length``
        of the tokenizer; T5 has relative positions and only records it).
    dropout : bool, default=True
        If False, every dropout probability of the config is 0, so training is a
        deterministic function of the data and the seeds.
    folder : str or path-like, optional
        Where to save the model. By default, a folder in the system's temporary
        directory named by ``kind``, the vocabulary and the transformers version.
        An existing folder is returned as it is.

    Returns
    -------
    folder : str
        Path of the saved model and tokenizer (``from_pretrained`` loads it).

    Raises
    ------
    ValueError
        If ``kind`` is not one of the architectures above.

    See Also
    --------
    load_demo_tasks : texts whose words the default vocabulary holds.
    skillfit.backbones.clear_backbone_cache : forget loaded backbones.

    References
    ----------
    .. [1] Wolf et al. "Transformers: State-of-the-Art Natural Language Processing."
       EMNLP 2020 System Demonstrations (arXiv:1910.03771).

    Examples
    --------
    >>> from skillfit import PolyClassifier
    >>> from skillfit.datasets import make_tiny_backbone
    >>> backbone = make_tiny_backbone("bert")
    >>> clf = PolyClassifier(backbone=backbone, n_skills=2, max_epochs=1, random_state=0)
    >>> clf.fit([("a great film", "movies"), ("is this spam ?", "sms")], ["pos", "spam"]).tasks_
    array(['movies', 'sms'], dtype=object)
    """
    if kind not in TINY_KINDS:
        raise ValueError(f"kind must be one of {', '.join(repr(k) for k in TINY_KINDS)}; got {kind!r}.")
    if not isinstance(max_positions, int) or max_positions < 8:
        raise ValueError(f"max_positions must be an int of at least 8; got {max_positions!r}.")
    path = os.fspath(folder) if folder is not None else _default_folder(kind, vocabulary, max_positions, dropout)
    if os.path.isdir(path):
        return path
    import torch

    from ..estimators._runtime import quiet_libraries

    tokenizer = _tokenizer(vocabulary, max_positions)
    with torch.random.fork_rng(), quiet_libraries(verbose=0):
        torch.manual_seed(0)
        config = _config(kind, len(tokenizer), max_positions)
        if not dropout:
            for name, value in config.to_dict().items():
                if ("dropout" in name or "pdrop" in name) and isinstance(value, float):
                    setattr(config, name, 0.0)
        model = _model_class(kind).from_config(config)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=os.path.basename(path) + "-", dir=parent)
    with quiet_libraries(verbose=0):
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    try:
        os.rename(staging, path)
    except OSError:  # another process built it first
        shutil.rmtree(staging, ignore_errors=True)
    return path
