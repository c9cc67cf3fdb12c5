"""
Few-shot transfer: a new task from a few examples
=================================================

Skills learned on five tasks let a sixth be learned from a few examples. A
:class:`~skillfit.CPolyClassifier` is fitted on five of the bundled demo tasks with the
offline MiniLM; the held-out task (movie sentiment by default) is then learned from
16, 32 and 64 examples with :meth:`~skillfit.CPolyClassifier.adapt` in each of its
modes, against a LoRA trained from scratch on the same examples.

- ``mode="routing"`` (Poly-z of Caccia et al. 2023) trains only the new task's routing
  over the frozen skills, its exclusive skills, and head rows for labels the source
  tasks lack (none here: the sentiment labels are shared, so the head stays as it is);
- ``mode="average"`` (Poly-µ) gives the new task its own adapter, started from the
  uniform average of the shared skills, and fine-tunes it;
- ``mode="all"`` adds the new task, then fine-tunes every trainable parameter.

In the first two modes the fitted tasks' predictions do not change at all.

Run it as a script: ``python examples/few_shot_transfer.py [--held-out movie_sentiment]
[--per-task 300]``. With ``SKILLFIT_EXAMPLE_SIZE=small`` it fits 32 texts per source
task for one epoch, adapts for 4 epochs, tries 16 and 32 examples, and tests on 60
texts of the held-out task.
"""

# %%
# Source tasks and the held-out task
# ----------------------------------

import argparse
import os
import pickle
import time

import pandas as pd

from skillfit import CPolyClassifier, LoRAClassifier
from skillfit.datasets import load_demo_tasks

# Sizes come from the command line (``args``) and ``SKILLFIT_EXAMPLE_SIZE``: see the script.
# sphinx_gallery_start_ignore
SIZE = os.environ.get("SKILLFIT_EXAMPLE_SIZE", "full")
if SIZE not in ("full", "small"):
    raise ValueError(f"SKILLFIT_EXAMPLE_SIZE must be 'full' or 'small'; got {SIZE!r}.")
SMALL = SIZE == "small"
SHOTS = (16, 32) if SMALL else (16, 32, 64)

parser = argparse.ArgumentParser(description="Adapt a multi-task C-Poly model to a held-out task from a few examples.")
parser.add_argument("--held-out", default="movie_sentiment")
parser.add_argument("--per-task", type=int, default=32 if SMALL else 300, help="training examples per source task")
parser.add_argument("--epochs", type=int, default=1 if SMALL else 2, help="epochs of the multi-task fit")
parser.add_argument("--adapt-epochs", type=int, default=4 if SMALL else 15, help="epochs over the few examples")
args = parser.parse_args()
# sphinx_gallery_end_ignore
MODES = ("routing", "average", "all")

X_train, y_train = load_demo_tasks(split="train", return_X_y=True)
X_test, y_test = load_demo_tasks(split="test", return_X_y=True)
source = X_train["task"] != args.held_out
X_source = X_train[source].groupby("task").sample(frac=1.0, random_state=0).groupby("task").head(args.per_task)
y_source = y_train.loc[X_source.index]
X_pool = X_train[~source].sample(frac=1.0, random_state=0)
y_pool = y_train.loc[X_pool.index]
X_eval, y_eval = X_test[X_test["task"] == args.held_out], y_test[X_test["task"] == args.held_out]
if SMALL:
    X_eval, y_eval = X_eval.iloc[:60], y_eval.iloc[:60]
print(f"source tasks: {sorted(X_source['task'].unique())}, {len(X_source)} texts; held out: {args.held_out}")

# %%
# Learn the source tasks together
# -------------------------------

settings = dict(max_length=64, random_state=0)
start = time.perf_counter()
multitask = CPolyClassifier(n_shared=4, n_exclusive=1, max_epochs=args.epochs, verbose=1, **settings)
multitask.fit(X_source, y_source)
print(f"multi-task fit in {time.perf_counter() - start:.0f}s")
snapshot = pickle.dumps(multitask)  # each adaptation starts from this model

# %%
# Adapt to the held-out task, against LoRA from scratch
# -----------------------------------------------------
# The first ``shots`` examples of a shuffled pool of the held-out task.

rows = []
for shots in SHOTS:
    X_few, y_few = X_pool.iloc[:shots], y_pool.iloc[:shots]
    row = {"shots": shots}
    for mode in MODES:
        adapted = pickle.loads(snapshot).set_params(verbose=0)
        adapted.adapt(X_few, y_few, mode=mode, max_epochs=args.adapt_epochs)
        row[f"C-Poly adapt {mode}"] = adapted.score(X_eval, y_eval)
    scratch = LoRAClassifier(max_epochs=args.adapt_epochs, **settings).fit(X_few, y_few)
    row["LoRA from scratch"] = scratch.score(X_eval, y_eval)
    rows.append(row)
table = pd.DataFrame(rows).set_index("shots")
majority = y_eval.value_counts(normalize=True).max()
print(f"test accuracy on {args.held_out} ({len(X_eval)} texts, majority {majority:.3f}):")
print(table.to_string(float_format=lambda value: f"{value:.3f}"))
print(f"\nmean over shots: {table.mean().round(3).to_dict()}")

# %%
# The same table as a plot (needs matplotlib).

try:
    import matplotlib.pyplot as plt  # noqa: F401
except ImportError:
    print("(pip install matplotlib to plot the table)")
else:
    ax = table.plot(marker="o", figsize=(6, 3.5))
    ax.axhline(majority, color="grey", linestyle=":", label="majority label")
    ax.set_xlabel("examples of the new task")
    ax.set_ylabel("test accuracy")
    ax.set_xticks(list(SHOTS))
    ax.legend(fontsize=8)
    ax.figure.tight_layout()
