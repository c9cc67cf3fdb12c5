#!/usr/bin/env python
"""bfloat16 against float32 backbones on SmolLM2-135M-Instruct: quality, time, and a save/load round trip.

The four demo tasks (``load_demo_tasks``) posed as instructions, as ``examples/seq2seq.py``
poses them: ``CPolySeq2Seq`` is scored by ROUGE-L of its generated answers and
``CPolyClassifier`` (last-token pooling) by accuracy, each fitted with
``backbone_dtype="float32"`` and ``"bfloat16"`` for every seed. The bfloat16 models are
saved, loaded back and must predict exactly as before. The table gives each seed and the
spread across seeds, so the precision gap can be read against the noise.

Usage::

    python benchmarks/precision_quality.py --per-task 40 --test-per-task 20 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from skillfit import CPolyClassifier, CPolySeq2Seq
from skillfit.datasets import load_demo_tasks
from skillfit.metrics import rouge_l_score

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
INSTRUCTIONS = {
    "sms_spam": "Is this text message spam or ham?",
    "tweet_sentiment": "Is the sentiment of this tweet positive or negative?",
    "question_type": "Is this question about a description, entity, human, location, numeric or abbreviation?",
    "movie_sentiment": "Is this movie review positive or negative?",
}


def demo_split(per_task: int, test_per_task: int, seed: int = 0):
    """``(X_train, y_train, X_test, y_test)`` of instruction prompts, ``per_task`` / ``test_per_task`` rows per task."""
    X, y = load_demo_tasks(return_X_y=True, as_frame=True)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for task in INSTRUCTIONS:
        rows = rng.permutation(np.flatnonzero(X["task"].to_numpy() == task))
        train += rows[:per_task].tolist()
        test += rows[per_task:per_task + test_per_task].tolist()
    rows = train + test
    prompts = [f"{INSTRUCTIONS[task]}\n{text}\nAnswer:" for text, task in zip(X["text"].iloc[rows], X["task"].iloc[rows])]
    pairs = np.empty((len(rows), 2), dtype=object)
    pairs[:, 0], pairs[:, 1] = prompts, X["task"].to_numpy()[rows]
    labels = np.asarray([str(label) for label in np.asarray(y)[rows]], dtype=object)
    n = len(train)
    return pairs[:n], labels[:n], pairs[n:], labels[n:]


def one_run(kind: str, dtype: str, seed: int, data, epochs: int) -> dict:
    X, y, X_test, y_test = data
    common = dict(backbone=SMOLLM2, backbone_dtype=dtype, random_state=seed, max_epochs=epochs, batch_size=16,
                  max_length=96, learning_rate=2e-3)
    est = (CPolySeq2Seq(n_shared=4, n_exclusive=1, max_new_tokens=4, **common) if kind == "seq2seq"
           else CPolyClassifier(n_shared=4, n_exclusive=1, **common))
    start = time.perf_counter()
    est.fit(X, y)
    fit_seconds = time.perf_counter() - start
    predictions = est.predict(X_test)
    score = (rouge_l_score(list(y_test), list(predictions)) if kind == "seq2seq"
             else float(np.mean(predictions == y_test)))
    round_trip = None
    if dtype == "bfloat16":
        with tempfile.TemporaryDirectory() as folder:
            est.save_pretrained(folder)
            loaded = type(est).from_pretrained(folder)
            round_trip = bool(np.array_equal(loaded.predict(X_test), predictions))
    return {"kind": kind, "dtype": dtype, "seed": seed, "score": score, "fit_seconds": fit_seconds,
            "round_trip_equal": round_trip}


def _scores(runs: list[dict]) -> str:
    return ", ".join(f"{run['score']:.3f}" for run in runs)


def table(results: list[dict]) -> str:
    lines = ["| estimator | metric | float32 (per seed) | bfloat16 (per seed) | mean gap | float32 seed spread | "
             "bfloat16 fit time / float32 | bfloat16 save/load equal |", "|---|---|---|---|---:|---:|---:|---|"]
    for kind, metric in (("seq2seq", "ROUGE-L"), ("classifier", "accuracy")):
        full = [r for r in results if r["kind"] == kind and r["dtype"] == "float32"]
        low = [r for r in results if r["kind"] == kind and r["dtype"] == "bfloat16"]
        if not full or not low:
            continue
        gap = statistics.mean(r["score"] for r in low) - statistics.mean(r["score"] for r in full)
        spread = (max(r["score"] for r in full) - min(r["score"] for r in full)) if len(full) > 1 else float("nan")
        speed = statistics.mean(r["fit_seconds"] for r in low) / statistics.mean(r["fit_seconds"] for r in full)
        lines.append(f"| CPoly{'Seq2Seq' if kind == 'seq2seq' else 'Classifier'} | {metric} "
                     f"| {_scores(full)} | {_scores(low)} "
                     f"| {gap:+.3f} | {spread:.3f} | {speed:.2f} | {all(r['round_trip_equal'] for r in low)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-task", type=int, default=40)
    parser.add_argument("--test-per-task", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--kinds", nargs="+", default=["seq2seq", "classifier"], choices=["seq2seq", "classifier"])
    parser.add_argument("--output", type=Path, help="write the table (.md) and the records (.jsonl) here")
    args = parser.parse_args(argv)
    data = demo_split(args.per_task, args.test_per_task)
    results = []
    for kind in args.kinds:
        for seed in args.seeds:
            for dtype in ("float32", "bfloat16"):
                results.append(one_run(kind, dtype, seed, data, args.epochs))
                print(json.dumps(results[-1]), flush=True)
    print(table(results))
    if args.output:
        args.output.with_suffix(".md").write_text(table(results) + "\n")
        args.output.with_suffix(".jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
