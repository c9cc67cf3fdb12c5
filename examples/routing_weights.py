"""
Reading the routing weights
===========================

In Polytropon (:class:`~skillfit.PolyClassifier`) and C-Poly every task learns, in every
adapted layer, how much of each shared skill to use. This example fits Poly-S (four
skills, two routing heads) on the six demo tasks with the offline MiniLM and reads
what the routers learned: the weights themselves, one layer in detail, how alike the
tasks route, and the two heatmaps of :mod:`skillfit.plotting`.

Run it as a script: ``python examples/routing_weights.py``; ``SKILLFIT_EXAMPLE_SIZE=small``
trains on 48 texts per task for one epoch instead of 200 for two.
"""

# %%
# Fit Poly-S on the six demo tasks
# --------------------------------

import os

import numpy as np
import pandas as pd

from skillfit import PolyClassifier
from skillfit.datasets import load_demo_tasks

# ``SMALL``: ``SKILLFIT_EXAMPLE_SIZE=small`` in the environment (see the script).
# sphinx_gallery_start_ignore
SIZE = os.environ.get("SKILLFIT_EXAMPLE_SIZE", "full")
if SIZE not in ("full", "small"):
    raise ValueError(f"SKILLFIT_EXAMPLE_SIZE must be 'full' or 'small'; got {SIZE!r}.")
SMALL = SIZE == "small"
# sphinx_gallery_end_ignore

X, y = load_demo_tasks(split="train", return_X_y=True)
X = X.groupby("task").sample(frac=1.0, random_state=0).groupby("task").head(48 if SMALL else 200)
y = y.loc[X.index]
clf = PolyClassifier(n_skills=4, n_splits=2, max_epochs=1 if SMALL else 2, max_length=64, random_state=0)
clf.fit(X, y)

# %%
# All routed layers side by side
# ------------------------------
# ``routing_weights_`` has one row per task and one column per (layer, head, skill);
# each head's weights sum to 1. Skill ``k`` of one layer has nothing to do with skill
# ``k`` of another, so the weights are never averaged over layers.

layers = clf.layer_routing_weights_
n_tasks, n_heads, n_skills = next(iter(layers.values())).shape
print(f"routing_weights_: {clf.routing_weights_.shape} = {n_tasks} tasks x "
      f"({len(layers)} layers x {n_heads} heads x {n_skills} skills)")
print("first routed layers:", list(layers)[:2])

# %%
# One layer in detail
# -------------------
# ``layer_routing_weights_`` maps each routed layer to an array of tasks x heads x skills.

name = list(layers)[-1]
one_layer = pd.DataFrame(
    layers[name].reshape(n_tasks, -1),
    index=clf.tasks_,
    columns=[f"head {h} skill {k}" for h in range(n_heads) for k in range(n_skills)],
)
print(name)
print(one_layer.round(3).to_string())
print("each head sums to 1:", bool(abs(layers[name].sum(axis=-1) - 1).max() < 1e-5))

# %%
# How alike tasks route
# ---------------------
# ``task_similarity()`` compares the updates each task's routing builds from the shared
# skills, with the mean over tasks taken out (a centred cosine: 0 means the two tasks'
# deviations from the mean are unrelated; an average pair scores slightly below 0).

similarity = clf.task_similarity()
print(similarity.round(2).to_string())
pairs = similarity.where(~np.eye(n_tasks, dtype=bool)).stack()  # every pair of two different tasks
print("most alike pair:", pairs.idxmax(), f"{pairs.max():.2f}")

# %%
# Heatmaps
# --------
# :func:`~skillfit.plotting.plot_routing` draws ``routing_weights_``: every routed
# layer's heads and skills side by side, with a line between layers.

from skillfit.plotting import plot_routing, plot_task_similarity

ax = plot_routing(clf)
ax.figure.tight_layout()

# %%
# ``layer=`` draws one layer, its heads side by side.

ax = plot_routing(clf, layer=name)
ax.set_title(f"one layer: {name}", fontsize=9)
ax.figure.tight_layout()

# %%
# :func:`~skillfit.plotting.plot_task_similarity` draws ``task_similarity()``.

ax = plot_task_similarity(clf)
ax.figure.tight_layout()
