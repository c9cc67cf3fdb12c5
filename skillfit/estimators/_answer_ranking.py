"""Predicting by ranking a task's known answers (rank classification) instead of generating.

Many text-to-text tasks answer from a fixed set (labels, yes/no, options). Rank
classification, the evaluation of T0 (Sanh et al. 2022) and of the SuperGLUE results of
C-Poly, scores each candidate answer by its likelihood under the model, given the
prompt, and predicts the best; the answer is then always one of the candidates. A
candidate's score is the mean log-probability of its tokens (EOS included), so that
long and short answers compete on equal terms.

``known_answers_`` holds, for each task whose training targets form a small closed set,
those targets; ``answer_choices="auto"`` ranks them. A dict of choices per task may be
given instead.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import torch

IGNORE_INDEX = -100
# A task's targets form a closed set when it has at most this many distinct ones and
# each appears twice on average: labels, options and small numbers, not free text.
MAX_KNOWN_ANSWERS = 16


class AnswerChoiceTable:
    """The constraint of a dict ``{task id: non-empty list of distinct non-empty str}``."""

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, dict) and len(value) > 0 and all(
            isinstance(choices, (list, tuple)) and len(choices) > 0
            and all(isinstance(choice, str) and choice.strip() for choice in choices)
            and len(set(choices)) == len(choices)
            for choices in value.values()
        )

    def __str__(self) -> str:
        return "a dict mapping task ids to non-empty lists of distinct non-empty str"


def closed_answer_sets(targets: list[str], task_index: np.ndarray, tasks: np.ndarray) -> dict[Any, list[str]]:
    """Each task whose ``targets`` form a closed set -> its answers, most frequent first.

    A set is closed when it has at most ``MAX_KNOWN_ANSWERS`` distinct answers and at
    most half as many as the task has rows.
    """
    known: dict[Any, list[str]] = {}
    for index, task in enumerate(tasks.tolist()):
        counts = Counter(targets[row] for row in np.flatnonzero(task_index == index))
        n_rows = sum(counts.values())
        if n_rows and len(counts) <= min(MAX_KNOWN_ANSWERS, n_rows / 2):
            known[task] = [answer for answer, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]
    return known


def choices_by_task_index(estimator: Any) -> dict[int, tuple[str, ...]]:
    """The candidate answers ``predict`` ranks, by index in ``tasks_`` (empty: generate every row)."""
    setting = estimator.answer_choices
    if setting is None:
        return {}
    name = type(estimator).__name__
    if setting == "auto":
        known = getattr(estimator, "known_answers_", None)
        if known is None:
            raise ValueError(
                f"This {name} was fitted before skillfit kept each task's known answers, so "
                "answer_choices='auto' has nothing to rank: pass answer_choices as a dict "
                "{task: [answers]}, or fit again."
            )
        return _by_index(estimator.tasks_, {task: tuple(choices) for task, choices in known.items()})
    fitted = set(estimator.tasks_.tolist())
    unknown = [task for task in setting if task not in fitted]
    if unknown:
        raise ValueError(
            f"answer_choices names task(s) {sorted(map(str, unknown))[:10]} that {name} was not fitted on; "
            f"its tasks are {estimator.tasks_.tolist()[:10]}{'...' if len(fitted) > 10 else ''}."
        )
    return _by_index(estimator.tasks_, {task: tuple(choices) for task, choices in setting.items()})


def _by_index(tasks: np.ndarray, choices: dict[Any, tuple[str, ...]]) -> dict[int, tuple[str, ...]]:
    return {index: choices[task] for index, task in enumerate(tasks.tolist()) if task in choices}


def rank_answers(estimator: Any, encoded: dict[str, Any], choices: dict[int, tuple[str, ...]], progress=None) -> np.ndarray:
    """For each encoded prompt, the candidate of its task with the highest mean log-probability.

    Call inside the prediction scope (no_grad, autocast, inference). Candidates are
    tokenized as training targets are; every (row, candidate) pair is one sequence, in
    batches of ``batch_size`` pairs.
    """
    answer_ids = {index: estimator._answer_token_ids(list(options)) for index, options in choices.items()}
    predictions = np.empty(len(encoded["input_ids"]), dtype=object)
    for rows in estimator._iter_eval_batches(encoded):
        pairs = [(row, option) for row in rows for option in range(len(choices[int(encoded["tasks"][row])]))]
        scores = np.empty(len(pairs))
        for start in range(0, len(pairs), estimator.batch_size):
            chunk = pairs[start:start + estimator.batch_size]
            prompts = [encoded["input_ids"][row] for row, _ in chunk]
            answers = [answer_ids[int(encoded["tasks"][row])][option] for row, option in chunk]
            tasks = torch.as_tensor([int(encoded["tasks"][row]) for row, _ in chunk], dtype=torch.long)
            summed = _pair_log_likelihoods(estimator, prompts, answers, tasks)
            scores[start:start + len(chunk)] = summed.cpu().double().numpy() / np.array([len(a) for a in answers])
        position = 0
        for row in rows:
            options = choices[int(encoded["tasks"][row])]
            predictions[row] = options[int(np.argmax(scores[position:position + len(options)]))]
            position += len(options)
        if progress is not None:
            progress.update(len(rows))
    return predictions


def _pair_log_likelihoods(estimator: Any, prompts: list[list[int]], answers: list[list[int]], tasks: torch.Tensor):
    """Summed log-probability of each answer after its prompt, as one padded batch."""
    if not estimator.decoder_only_:
        input_ids, attention_mask = estimator._pad(prompts)
        labels, _ = estimator._pad(answers, pad_value=IGNORE_INDEX)
        return estimator.network_.label_log_likelihoods(input_ids, attention_mask, labels, tasks)
    positions = estimator._text_positions()
    if positions is not None:  # prompt and answer share the positions: cut the prompt's end, as in training
        prompts = [prompt[: max(1, positions - len(answer))] for prompt, answer in zip(prompts, answers)]
        answers = [answer[: positions - len(prompt)] for prompt, answer in zip(prompts, answers)]
    sequences = [prompt + answer for prompt, answer in zip(prompts, answers)]
    input_ids, attention_mask = estimator._pad(sequences, left=True)
    labels, _ = estimator._pad(
        [[IGNORE_INDEX] * len(prompt) + answer for prompt, answer in zip(prompts, answers)],
        left=True, pad_value=IGNORE_INDEX,
    )
    return estimator.network_.label_log_likelihoods(input_ids, attention_mask, labels, tasks)
