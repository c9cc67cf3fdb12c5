"""Multi-task text-to-text learning over a skilled generation backbone."""

from __future__ import annotations

from contextlib import nullcontext
from numbers import Integral
from typing import Any

import numpy as np
import torch

from .._inputs import check_target_texts
from .._validation import NONE, STRING, Interval, Options
from ..backbones import DEFAULT_GENERATOR, Backbone
from ..metrics import SCORERS
from ..skills import SkillConfig
from ._answer_ranking import AnswerChoiceTable, choices_by_task_index, closed_answer_sets, rank_answers
from ._base import SkillEstimatorBase
from ._concurrency import batch_decode, reads_model, tokenize
from ._networks import SkilledSeq2SeqNetwork
from ._params import estimator_parameters, parameter
from ._runtime import autocast, prediction_progress, reproducible_torch, resolve_seed

IGNORE_INDEX = -100  # label id the loss skips (transformers' convention)


@estimator_parameters
class SkillSeq2SeqBase(SkillEstimatorBase):
    """Text-to-text side of the family: ``y`` holds target strings, ``predict`` generates.

    Encoder-decoder backbones (T5, BART, ``EncoderDecoderModel`` pairs) read the text and
    generate the target. Decoder-only backbones (GPT-2, Llama, SmolLM2) read the text
    followed by the target and its EOS token, with the loss on the target tokens only.
    """

    backbone: str = parameter(DEFAULT_GENERATOR, STRING)
    max_target_length: int = parameter(64, Interval(Integral, 1, None))
    max_new_tokens: int = parameter(32, Interval(Integral, 1, None))
    num_beams: int = parameter(1, Interval(Integral, 1, 1024))  # more beams than this only exhaust memory
    do_sample: bool = parameter(False, Options(False, True))
    scoring: str = parameter("rougeL", Options(*SCORERS))
    answer_choices: str | dict | None = parameter(None, NONE, Options("auto"), AnswerChoiceTable())

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.target_tags.required = True
        tags.non_deterministic = self.random_state is None or self.do_sample
        return tags

    _backbone_kind = "generator"
    _network_class = SkilledSeq2SeqNetwork

    # ---------------------------------------------------------------- fit hooks
    def _check_targets(self, y: Any, n_samples: int) -> list[str]:
        return check_target_texts(y, n_samples)

    _check_adapt_targets = _check_targets

    def _warm_start_targets(self, y: Any, n_samples: int, task_index: np.ndarray) -> list[str]:
        return check_target_texts(y, n_samples)

    def _add_task_outputs(
        self, targets: list[str], task_index: np.ndarray, n_old_tasks: int
    ) -> tuple[list[str], list[torch.nn.Parameter]]:
        new_tasks = self.tasks_[n_old_tasks:]
        new_rows = task_index >= n_old_tasks
        known = closed_answer_sets([t for t, new in zip(targets, new_rows) if new], task_index[new_rows] - n_old_tasks, new_tasks)
        if getattr(self, "known_answers_", None) is not None:
            self.known_answers_ = {**self.known_answers_, **known}
        return targets, []  # generation has no per-label parameters

    def _build_network(
        self, backbone: Backbone, skill_config: SkillConfig, targets: list[str], task_index: np.ndarray
    ) -> SkilledSeq2SeqNetwork:
        self.known_answers_ = closed_answer_sets(targets, task_index, self.tasks_)
        descriptions = self._initial_task_descriptions(backbone)
        context = self._inject(backbone, skill_config)
        self.decoder_only_ = backbone.decoder_only
        return SkilledSeq2SeqNetwork(backbone.model, context, descriptions)

    def _eos_terminated(self, ids: list[int]) -> list[int]:
        eos = self.tokenizer_.eos_token_id
        return ids if eos is None or (ids and ids[-1] == eos) else ids + [eos]

    def _answer_token_ids(self, targets: list[str]) -> list[list[int]]:
        """The label ids of target texts, EOS-terminated: what the loss trains and rank classification scores."""
        if not self.decoder_only_:
            labels = tokenize(self.tokenizer_, text_target=targets, truncation=True, max_length=self.max_target_length)["input_ids"]
            return [self._eos_terminated(ids) for ids in labels]
        # Decoder-only: the target continues the prompt after a space.
        continuations = tokenize(
            self.tokenizer_, [" " + target for target in targets], add_special_tokens=False, truncation=True,
            max_length=self.max_target_length,
        )["input_ids"]
        return [self._eos_terminated(ids) for ids in continuations]

    def _encode(self, texts: list[str], task_index: np.ndarray, targets: list[str] | None) -> dict[str, Any]:
        """Token ids of prompts and, when training, of prompt + target with the label ids."""
        tokenizer = self.tokenizer_
        # A decoder-only model reads the prompt and then the generated tokens in one sequence.
        reserved = self.max_new_tokens if self.decoder_only_ and targets is None else 0
        prompts = tokenize(tokenizer, texts, truncation=True, max_length=self._length_limit(reserved))["input_ids"]
        encoded: dict[str, Any] = {"input_ids": prompts, "tasks": task_index}
        if targets is None:
            return encoded
        if not self.decoder_only_:
            encoded["labels"] = self._answer_token_ids(targets)
            return encoded
        # Decoder-only: the model reads prompt + target; only the target's tokens are labels,
        # so the loss never reads the prompt.
        continuations = self._answer_token_ids(targets)
        positions = self._text_positions()
        if positions is not None:  # prompt and target share the positions: cut the prompt first
            prompts = [prompt[: max(1, positions - len(target))] for prompt, target in zip(prompts, continuations)]
            continuations = [target[: positions - len(prompt)] for prompt, target in zip(prompts, continuations)]
        encoded["input_ids"] = [prompt + target for prompt, target in zip(prompts, continuations)]
        encoded["labels"] = [[IGNORE_INDEX] * len(prompt) + target for prompt, target in zip(prompts, continuations)]
        return encoded

    def _make_batch(self, indices: np.ndarray, encoded: dict[str, Any]) -> dict[str, torch.Tensor]:
        """A padded batch; decoder-only rows are left-padded, so targets end every row (and generation starts there)."""
        left_pad = self.decoder_only_
        input_ids, attention_mask = self._pad([encoded["input_ids"][i] for i in indices], left=left_pad)
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "tasks": torch.as_tensor(encoded["tasks"][indices], dtype=torch.long),
        }
        if "labels" in encoded:
            labels, _ = self._pad([encoded["labels"][i] for i in indices], left=left_pad, pad_value=IGNORE_INDEX)
            batch["labels"] = labels
        return batch

    def _task_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.network_(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["tasks"])

    # ------------------------------------------------------------ validation hooks
    def _check_validation_targets(self, y_val: Any, n_samples: int) -> list[str]:
        return check_target_texts(y_val, n_samples, ("X_val", "y_val"))

    def _loss_units(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["labels"] != IGNORE_INDEX).sum())

    def _row_units(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return (batch["labels"] != IGNORE_INDEX).sum(dim=1).float()

    def _predict_encoded(self, encoded: dict[str, Any]) -> np.ndarray:
        """Rank the known answers of the rows whose task has some (``answer_choices``), generate the rest."""
        n_rows = len(encoded["input_ids"])
        predictions = np.empty(n_rows, dtype=object)
        choices = choices_by_task_index(self)
        ranked = np.isin(encoded["tasks"], list(choices))
        self.network_.eval()
        # Only sampling draws from torch's RNG: greedy and beam search skip the seeded scope,
        # which runs one thread at a time, and so predict in parallel across threads.
        seeded = reproducible_torch(resolve_seed(self.random_state)) if self.do_sample else nullcontext()
        with prediction_progress(self.verbose, n_rows, f"{type(self).__name__}.predict") as progress, \
                torch.no_grad(), autocast(self.device_), self._inference(), seeded:
            if ranked.any():
                rows = np.flatnonzero(ranked)
                predictions[rows] = rank_answers(self, _take_rows(encoded, rows), choices, progress)
            if not ranked.all():
                rows = np.flatnonzero(~ranked)
                predictions[rows] = self._generate(_take_rows(encoded, rows) if ranked.any() else encoded, progress)
        return predictions

    def _generate(self, encoded: dict[str, Any], progress=None) -> np.ndarray:
        predictions = np.empty(len(encoded["input_ids"]), dtype=object)
        for indices in self._iter_eval_batches(encoded):
            batch = self._make_batch(indices, encoded)
            generated = self.network_.generate(
                batch["input_ids"], batch["attention_mask"], batch["tasks"], **self._generation_settings()
            )
            decoded = batch_decode(self.tokenizer_, generated, skip_special_tokens=True)
            predictions[indices] = [text.strip() for text in decoded]
            if progress is not None:
                progress.update(len(indices))
        return predictions

    def _prediction_score(self, targets: list[str], predictions: np.ndarray) -> float:
        return SCORERS[self.scoring](list(targets), list(predictions))

    # ---------------------------------------------------------------- predict
    def _generation_settings(self) -> dict[str, Any]:
        tokenizer = self.tokenizer_
        return {
            "max_new_tokens": self.max_new_tokens,
            "num_beams": self.num_beams,
            "do_sample": self.do_sample,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        }

    @reads_model
    def predict(self, X: Any) -> np.ndarray:
        """Generate the target text of each ``(text, task)`` pair.

        Rows are batched by task and by length; decoder-only prompts are left-padded.
        With ``do_sample=True`` the sampling is seeded by ``random_state`` in a private
        RNG scope, so it repeats and leaves the global RNG untouched. Generation is
        that of the backbone's Hugging Face Transformers [1]_ model, with
        ``max_new_tokens``, ``num_beams`` and ``do_sample``; special tokens are
        dropped and the texts stripped.

        Parameters
        ----------
        X : DataFrame, list of (text, task) or array of shape (n_samples, 2)
            Texts and their task ids. With ``handle_unknown_task`` other than
            ``"error"``, task ids may be missing or unseen (``X`` may then be texts
            alone); ``unknown_task_report_`` tells what became of such rows.

        Returns
        -------
        ndarray of str, shape (n_samples,)
            The generated texts (an object array).

        See Also
        --------
        skillfit.PolySeq2Seq.score : ROUGE-L or exact match of these texts.
        skillfit.datasets.load_demo_text2text : Small multi-task text-to-text data.

        References
        ----------
        .. [1] Wolf et al. "Transformers: State-of-the-Art Natural Language Processing."
           EMNLP 2020 System Demonstrations (arXiv:1910.03771).

        Examples
        --------
        >>> from skillfit import PolySeq2Seq
        >>> from skillfit.datasets import make_tiny_backbone
        >>> X = [("translate hello", "translate"), ("translate good night", "translate"),
        ...      ("summarise a long day at work", "summarise"), ("summarise the news", "summarise")]
        >>> y = ["bonjour", "bonne nuit", "long day", "news"]
        >>> gen = PolySeq2Seq(backbone=make_tiny_backbone("gpt2"), max_new_tokens=4, max_epochs=1,
        ...                   random_state=0).fit(X, y)
        >>> texts = gen.predict(X)
        >>> texts.shape
        (4,)
        >>> all(isinstance(text, str) for text in texts)
        True
        >>> max(len(text.split()) for text in texts) <= 4  # at most max_new_tokens words here
        True
        """
        return self._predict_in_chunks(X, self._predict_encoded)

    @reads_model
    def score(self, X: Any, y: Any, sample_weight: None = None) -> float:
        """Mean ROUGE-L F1 (``scoring="rougeL"``) or exact match of the predictions.

        With ``scoring="rougeL"`` (the default), each prediction's ROUGE-L [1]_ F1
        against its reference (:func:`~skillfit.metrics.rouge_l`), averaged over the
        rows; with ``scoring="exact_match"``, the fraction of predictions equal to
        their reference after stripping surrounding whitespace. Rows of all tasks are pooled.

        Parameters
        ----------
        X : DataFrame, list of (text, task) or array of shape (n_samples, 2)
            Texts and their task ids. With ``handle_unknown_task`` other than
            ``"error"``, task ids may be missing or unseen (``X`` may then be texts
            alone); ``unknown_task_report_`` tells what became of such rows.
        y : sequence of str
            Reference targets.
        sample_weight : None, default=None
            Not supported (text-to-text scores are unweighted): anything but None
            raises a ValueError. Present for scikit-learn's ``score`` signature.

        Returns
        -------
        float
            The mean score, in [0, 1].

        See Also
        --------
        skillfit.metrics.rouge_l_score : Mean ROUGE-L F1 of reference and predicted texts.
        skillfit.metrics.exact_match_score : Fraction of exactly matching texts.
        skillfit.PolySeq2Seq.predict : The texts that are scored.

        References
        ----------
        .. [1] Lin. "ROUGE: A Package for Automatic Evaluation of Summaries." Text
           Summarization Branches Out, ACL Workshop 2004.

        Examples
        --------
        >>> from skillfit.metrics import exact_match_score, rouge_l_score
        >>> from skillfit import PolySeq2Seq
        >>> from skillfit.datasets import make_tiny_backbone
        >>> X = [("translate hello", "translate"), ("translate good night", "translate"),
        ...      ("summarise a long day at work", "summarise"), ("summarise the news", "summarise")]
        >>> y = ["bonjour", "bonne nuit", "long day", "news"]
        >>> gen = PolySeq2Seq(backbone=make_tiny_backbone("gpt2"), max_new_tokens=4, max_epochs=1,
        ...                   random_state=0).fit(X, y)
        >>> rouge = gen.score(X, y)
        >>> 0.0 <= rouge <= 1.0
        True
        >>> texts = list(gen.predict(X))
        >>> rouge == rouge_l_score(y, texts)
        True
        >>> gen.set_params(scoring="exact_match").score(X, y) == exact_match_score(y, texts)
        True
        """
        if sample_weight is not None:
            raise ValueError("sample_weight is not supported by text-to-text scores.")
        references = check_target_texts(y, self._n_rows(X))
        return self._prediction_score(references, self.predict(X))


def _take_rows(encoded: dict[str, Any], rows: np.ndarray) -> dict[str, Any]:
    """The ``rows`` of encoded prompts (token id lists and task indices)."""
    return {"input_ids": [encoded["input_ids"][row] for row in rows], "tasks": encoded["tasks"][rows]}
