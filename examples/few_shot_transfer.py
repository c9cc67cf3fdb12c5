"""Few-shot transfer: skills learned on five tasks let a sixth be learned from a few examples.

A C-Poly model is fitted on five of the bundled demo tasks with the offline MiniLM.
The held-out task (default: movie_sentiment) is then learned from 16, 32 and 64
examples in each ``adapt`` mode, against a LoRA trained from scratch on the same
examples. Prints a table of test accuracy on the held-out task.

Run:  python examples/few_shot_transfer.py [--held-out movie_sentiment] [--per-task 300]
"""

from __future__ import annotations

import argparse
import pickle
import time

import numpy as np
import pandas as pd

from skillfit import CPolyClassifier, LoRAClassifier
from skillfit.datasets import load_demo_tasks

SHOTS = (16, 32, 64)
MODES = ("routing", "average", "all")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--held-out", default="movie_sentiment")
    parser.add_argument("--per-task", type=int, default=300, help="training examples per source task")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the multi-task fit")
    parser.add_argument("--adapt-epochs", type=int, default=15, help="epochs over the few examples")
    args = parser.parse_args()

    X_train, y_train = load_demo_tasks(split="train", return_X_y=True)
    X_test, y_test = load_demo_tasks(split="test", return_X_y=True)
    source = X_train["task"] != args.held_out
    X_source = X_train[source].groupby("task").sample(frac=1.0, random_state=0).groupby("task").head(args.per_task)
    y_source = y_train.loc[X_source.index]
    X_pool, y_pool = X_train[~source].sample(frac=1.0, random_state=0), y_train[~source]
    y_pool = y_pool.loc[X_pool.index]
    X_eval, y_eval = X_test[X_test["task"] == args.held_out], y_test[X_test["task"] == args.held_out]
    print(f"source tasks: {sorted(X_source['task'].unique())}, {len(X_source)} texts; held out: {args.held_out}")

    settings = dict(max_length=64, random_state=0)
    start = time.perf_counter()
    multitask = CPolyClassifier(n_shared=4, n_exclusive=1, max_epochs=args.epochs, verbose=1, **settings)
    multitask.fit(X_source, y_source)
    print(f"multi-task fit in {time.perf_counter() - start:.0f}s")
    snapshot = pickle.dumps(multitask)

    rows = []
    for shots in SHOTS:
        # The first `shots` examples of a shuffled pool, with both labels present.
        X_few, y_few = X_pool.iloc[:shots], y_pool.iloc[:shots]
        row = {"shots": shots}
        for mode in MODES:
            adapted = pickle.loads(snapshot).set_params(verbose=0)
            adapted.adapt(X_few, y_few, mode=mode, max_epochs=args.adapt_epochs)
            row[f"C-Poly adapt {mode}"] = adapted.score(X_eval, y_eval)
        scratch = LoRAClassifier(max_epochs=args.adapt_epochs, **settings).fit(X_few, y_few)
        row["LoRA from scratch"] = scratch.score(X_eval, y_eval)
        rows.append(row)
        print(row, flush=True)
    table = pd.DataFrame(rows).set_index("shots")
    print(f"\ntest accuracy on {args.held_out} ({len(X_eval)} texts, majority {y_eval.value_counts(normalize=True).max():.3f}):")
    print(table.to_string(float_format=lambda value: f"{value:.3f}"))
    print(f"\nmean over shots: {table.mean().round(3).to_dict()}")
    if np.all(table["C-Poly adapt routing"] >= table["LoRA from scratch"]):
        print("routing-only adaptation beats LoRA from scratch at every shot count")


if __name__ == "__main__":
    main()
