#!/usr/bin/env python
"""Does the routing learn? Accuracy and task grouping of Poly and C-Poly on the demo tasks.

Trains on the quickstart's data (the six demo tasks, 400 training texts each, MiniLM)
and reports, per setting and seed:

* mean test accuracy over the tasks;
* the range of the layer-averaged routing weights and of the per-layer weights;
* whether ``task_similarity()`` groups the four sentiment tasks: the mean similarity
  within them and from them to SMS spam and question type, and for each sentiment
  task whether its mean similarity to the other three beats its largest similarity
  to SMS spam or question type.

Usage::

    python benchmarks/routing.py                         # every setting, ~25 min on 2 CPU cores
    python benchmarks/routing.py --settings "Poly, router 0.5" --seeds 0

Results are written to ``benchmarks/results/routing.md`` (``--output``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from skillfit import CPolyClassifier, LoRAClassifier, PolyClassifier
from skillfit.datasets import load_demo_tasks

HERE = Path(__file__).resolve().parent
OTHER_TASKS = ("sms_spam", "question_type")

# Poly against shared LoRA at 2 epochs and learning rate 1e-3 (the slow-start case),
# and C-Poly as the quickstart trains it (3 epochs, defaults), each at the old router
# learning rate (0.05) and the current default (0.5).
SETTINGS: dict[str, tuple[Callable[..., object], dict]] = {
    "LoRA shared": (lambda **kw: LoRAClassifier(sharing="shared", **kw), dict(max_epochs=2, learning_rate=1e-3)),
    "Poly, router 0.05": (lambda **kw: PolyClassifier(n_skills=4, **kw), dict(max_epochs=2, learning_rate=1e-3, router_learning_rate=0.05)),
    "Poly, router 0.5": (lambda **kw: PolyClassifier(n_skills=4, **kw), dict(max_epochs=2, learning_rate=1e-3, router_learning_rate=0.5)),
    "C-Poly quickstart, router 0.05": (
        lambda **kw: CPolyClassifier(n_shared=4, n_exclusive=1, **kw), dict(max_epochs=3, router_learning_rate=0.05)),
    "C-Poly quickstart, router 0.5": (
        lambda **kw: CPolyClassifier(n_shared=4, n_exclusive=1, **kw), dict(max_epochs=3, router_learning_rate=0.5)),
}


def grouping(similarity: pd.DataFrame) -> dict[str, object]:
    """How ``task_similarity()`` places the sentiment tasks against the two others."""
    names = list(similarity.index)
    values = similarity.to_numpy()
    sentiment = [i for i, name in enumerate(names) if "sentiment" in str(name)]
    others = [i for i, name in enumerate(names) if name in OTHER_TASKS]
    within = [values[i, j] for i in sentiment for j in sentiment if i < j]
    across = [values[i, j] for i in sentiment for j in others]
    closer = [np.mean([values[i, j] for j in sentiment if j != i]) > max(values[i, j] for j in others) for i in sentiment]
    return {
        "within sentiment": float(np.mean(within)),
        "sentiment to others": float(np.mean(across)),
        "tasks closer to sentiment": f"{sum(closer)}/{len(closer)}",
        "all pairs apart": bool(min(within) > max(across)),
    }


def markdown(frame: pd.DataFrame) -> str:
    """A DataFrame as a markdown table (floats to 3 decimals)."""
    cells = frame.map(lambda value: f"{value:.3f}" if isinstance(value, float) else str(value))
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells.to_numpy().tolist()])


def run(setting: str, seed: int, splits: dict[str, pd.DataFrame]) -> dict[str, object]:
    make, overrides = SETTINGS[setting]
    clf = make(max_length=64, group_by_length=True, random_state=seed, **overrides)
    fit, test = splits["fit"], splits["test"]
    start = time.perf_counter()
    clf.fit(fit[["text", "task"]], fit["label"])
    seconds = time.perf_counter() - start
    correct = clf.predict(test[["text", "task"]]) == test["label"].to_numpy()
    record: dict[str, object] = {
        "setting": setting, "seed": seed, "fit (s)": round(seconds),
        "mean accuracy": float(np.mean([correct[(test["task"] == task).to_numpy()].mean() for task in clf.tasks_])),
    }
    layers = clf.layer_routing_weights_
    if layers:
        average = np.mean([weights.mean(axis=1) for weights in layers.values()], axis=0)
        record["layer average"] = f"{average.min():.2f}-{average.max():.2f}"
        record["per layer"] = f"{clf.routing_weights_.min():.2f}-{clf.routing_weights_.max():.2f}"
        record.update(grouping(clf.task_similarity()))
    print(record, flush=True)
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS), metavar="SETTING")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--per-task", type=int, default=400, help="training texts per task, as the quickstart")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "routing.md")
    args = parser.parse_args(argv)

    train = load_demo_tasks(split="train").frame
    keep = train.groupby("task").sample(frac=1.0, random_state=0).groupby("task").head(args.per_task).index
    splits = {"fit": train.loc[keep], "test": load_demo_tasks(split="test").frame}
    records = pd.DataFrame([run(setting, seed, splits) for setting in args.settings for seed in args.seeds])
    summary = records.groupby("setting", sort=False)["mean accuracy"].agg(["mean", "std", "count"]).reset_index()
    report = "\n\n".join([
        f"## Routing on the demo tasks ({args.per_task} training texts per task)",
        markdown(records.fillna("")),
        "Mean test accuracy over seeds:",
        markdown(summary),
    ]) + "\n"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print("\n" + report)


if __name__ == "__main__":
    main()
