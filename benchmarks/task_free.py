#!/usr/bin/env python
"""Predicting without task ids: accuracy and cost of "infer", "route", "average" against the oracle.

Each routed method is fitted once per seed on the bundled demo tasks (MiniLM, the
splits and settings of ``quality.py``'s standard profile, learning rate 2e-3). The
test split is then predicted with its task column (the oracle) and with texts alone
under each ``handle_unknown_task``. Also measured in the same run:

- the task identifier's accuracy (``predict_task``), and a multinomial logistic
  regression on the same frozen features as a peer;
- its cost: ``fit_task_identifier`` (what ``fit`` adds) against the fit, and the
  prediction time of each mode against the oracle's;
- content routing's ``route_top_k``;
- peft's Arrow (``create_arrow_model``) over the per-task LoRAs that ``export_peft``
  writes, on the same backbone with the estimator's head, for every fitted task.

Usage::

    python benchmarks/task_free.py                  # 3 methods x 3 seeds, about 25 min on 2 CPU cores
    python benchmarks/task_free.py --quick          # 1 seed, C-Poly only
    python benchmarks/task_free.py --many           # 100 of the few-shot tasks of load_many_tasks, seed 0

Results go to ``<output>/results.jsonl`` (one record per fit, resumable) and ``report.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import PROFILES, load_splits, per_task_accuracy  # noqa: E402

import skillfit  # noqa: E402
from skillfit import CPolyClassifier, PolyClassifier  # noqa: E402
from skillfit.estimators._networks import pool_hidden_states  # noqa: E402

HERE = Path(__file__).resolve().parent
LEARNING_RATE = 2e-3
METHODS = {
    "C-Poly": lambda **kw: CPolyClassifier(n_shared=2, n_exclusive=1, **kw),
    "Poly": lambda **kw: PolyClassifier(n_skills=8, **kw),
    "Poly-S": lambda **kw: PolyClassifier(n_skills=8, n_splits=4, **kw),
}
MODES = ("infer", "infer_and_route", "route", "average")
TOP_K = (1, 2, 4, 8)
THRESHOLDS = (0.5, 0.9)
ARROW_TOP_K = (1, 3)


def timed(call):
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def mean_accuracy(frame: pd.DataFrame, predictions) -> float:
    """Mean over tasks of the per-task accuracy (as quality.py reports)."""
    return float(np.mean(list(per_task_accuracy(frame, predictions).values())))


def arrow_predictions(estimator, texts: list[str], top_k: int) -> tuple[np.ndarray, float]:
    """peft's Arrow over the per-task LoRA exports of ``estimator``, read by its head over every label."""
    from peft import ArrowConfig, create_arrow_model
    from transformers import AutoModel

    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i, task in enumerate(estimator.tasks_):
            path = Path(folder) / f"task_{i}"
            estimator.export_peft(path, task=task)
            paths.append(str(path))
        start = time.perf_counter()
        base = AutoModel.from_pretrained(estimator.network_.backbone.name_or_path).eval()
        model = create_arrow_model(base, paths, ArrowConfig(top_k=top_k, router_temperature=1.0)).eval()
        head = estimator.network_.head.cpu().float()
        predictions = np.empty(len(texts), dtype=object)
        order = np.argsort([len(text) for text in texts], kind="stable")
        with torch.no_grad():
            for begin in range(0, len(texts), estimator.batch_size):
                rows = order[begin:begin + estimator.batch_size]
                batch = estimator.tokenizer_([texts[i] for i in rows], return_tensors="pt", padding=True,
                                             truncation=True, max_length=estimator.max_length)
                hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
                logits = head(pool_hidden_states(hidden, batch["attention_mask"], estimator.pooling_))
                predictions[rows] = estimator.classes_[logits.argmax(dim=1).numpy()]
        return predictions, time.perf_counter() - start


def run_one(method: str, seed: int, splits: dict, profile, arrow: bool, **settings) -> dict:
    """One fit of ``method`` and every measurement on it; ``settings`` override the estimator's (tests)."""
    fit, test = splits["fit"], splits["test"]
    texts = test["text"].tolist()
    estimator = METHODS[method](**{
        "learning_rate": LEARNING_RATE, "max_epochs": profile.max_epochs, "batch_size": profile.batch_size,
        "max_length": profile.max_length, "group_by_length": profile.group_by_length, "random_state": seed,
        **settings,
    })
    _, fit_seconds = timed(lambda: estimator.fit(fit[["text", "task"]], fit["label"]))
    _, identifier_seconds = timed(lambda: estimator.fit_task_identifier(fit[["text", "task"]]))
    record = dict(method=method, seed=seed, n_fit=len(fit), n_test=len(test), n_tasks=int(fit["task"].nunique()),
                  fit_s=fit_seconds, identifier_fit_s=identifier_seconds)
    oracle, record["predict_s_oracle"] = timed(lambda: estimator.predict(test[["text", "task"]]))
    record["accuracy_oracle"] = mean_accuracy(test, oracle)
    for mode in MODES:
        estimator.set_params(handle_unknown_task=mode)
        predictions, record[f"predict_s_{mode}"] = timed(lambda: estimator.predict(texts))
        record[f"accuracy_{mode}"] = mean_accuracy(test, predictions)
    estimator.set_params(handle_unknown_task="route")
    for k in TOP_K:
        estimator.set_params(route_top_k=k)
        record[f"accuracy_route_top{k}"] = mean_accuracy(test, estimator.predict(texts))
    estimator.set_params(route_top_k=2, handle_unknown_task="infer")
    for threshold in THRESHOLDS:
        estimator.set_params(unknown_task_threshold=threshold)
        record[f"accuracy_infer_threshold{threshold}"] = mean_accuracy(test, estimator.predict(texts))
        record[f"fell_back_threshold{threshold}"] = estimator.unknown_task_report_["fractions"]["fell_back"]
    estimator.set_params(unknown_task_threshold=0.0)
    inferred, record["predict_task_s"] = timed(lambda: estimator.predict_task(texts))
    record["identifier_accuracy"] = float(np.mean(inferred == test["task"].to_numpy()))
    confusion = pd.crosstab(test["task"], inferred, normalize="index")
    record["identifier_per_task"] = {task: float(confusion.loc[task].get(task, 0.0)) for task in confusion.index}
    # A peer on the same features: multinomial logistic regression, standardised.
    features_fit, features_test = estimator._task_features(fit["text"].tolist()), estimator._task_features(texts)
    peer = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=3000))
    _, record["logistic_fit_s"] = timed(lambda: peer.fit(features_fit, fit["task"].to_numpy()))
    record["logistic_identifier_accuracy"] = float(np.mean(peer.predict(features_test) == test["task"].to_numpy()))
    if arrow:
        for k in ARROW_TOP_K:
            predictions, record[f"predict_s_peft_arrow_top{k}"] = arrow_predictions(estimator, texts, k)
            record[f"accuracy_peft_arrow_top{k}"] = mean_accuracy(test, predictions)
    return record


def report(records: list[dict], title: str) -> str:
    frame = pd.DataFrame(records)
    lines = [f"# {title}", "", f"skillfit {skillfit.__version__}, torch {torch.__version__}, "
             f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads; "
             f"{frame['n_tasks'].iloc[0]} tasks, {frame['n_fit'].iloc[0]} fit rows, {frame['n_test'].iloc[0]} test rows.", ""]

    def cell(column):
        values = frame.loc[rows, column].dropna() if column in frame else pd.Series(dtype=float)
        if values.empty:
            return "-"
        return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" if len(values) > 1 else f"{values.mean():.3f}"

    lines += ["Mean per-task test accuracy, task column removed (oracle: with it). Mean ± sd over seeds.", "",
              "| method | seeds | oracle | infer | infer_and_route | route | average | peft Arrow top-1 | peft Arrow top-3 | identifier accuracy | LR on same features |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for method in frame["method"].unique():
        rows = frame["method"] == method
        lines.append(f"| {method} | {rows.sum()} | " + " | ".join(cell(c) for c in (
            "accuracy_oracle", "accuracy_infer", "accuracy_infer_and_route", "accuracy_route", "accuracy_average",
            "accuracy_peft_arrow_top1", "accuracy_peft_arrow_top3", "identifier_accuracy",
            "logistic_identifier_accuracy")) + " |")
    lines += ["", "Content routing by `route_top_k`:", "", "| method | " + " | ".join(f"top-{k}" for k in TOP_K) + " |",
              "|---|" + "---|" * len(TOP_K)]
    for method in frame["method"].unique():
        rows = frame["method"] == method
        lines.append(f"| {method} | " + " | ".join(cell(f"accuracy_route_top{k}") for k in TOP_K) + " |")
    lines += ["", "`unknown_task_threshold` with \"infer\" (accuracy; share of rows that fell back to \"average\"):", "",
              "| method | " + " | ".join(f"{t}: accuracy | {t}: fell back" for t in THRESHOLDS) + " |",
              "|---|" + "---|---|" * len(THRESHOLDS)]
    for method in frame["method"].unique():
        rows = frame["method"] == method
        lines.append(f"| {method} | " + " | ".join(
            f"{cell(f'accuracy_infer_threshold{t}')} | {cell(f'fell_back_threshold{t}')}" for t in THRESHOLDS) + " |")
    lines += ["", "Cost (median seconds; ratios against the fit or the oracle prediction of the same run):", "",
              "| method | fit | identifier fit | ratio | predict oracle | infer | ratio | route | ratio | average | ratio |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for method in frame["method"].unique():
        runs = frame[frame["method"] == method]
        med = lambda column: float(np.median(runs[column]))  # noqa: E731, B023
        ratio = lambda a, b: float(np.median(runs[a] / runs[b]))  # noqa: E731, B023
        lines.append(
            f"| {method} | {med('fit_s'):.1f} | {med('identifier_fit_s'):.1f} | {ratio('identifier_fit_s', 'fit_s'):.3f} "
            f"| {med('predict_s_oracle'):.1f} | {med('predict_s_infer'):.1f} | {ratio('predict_s_infer', 'predict_s_oracle'):.2f} "
            f"| {med('predict_s_route'):.1f} | {ratio('predict_s_route', 'predict_s_oracle'):.2f} "
            f"| {med('predict_s_average'):.1f} | {ratio('predict_s_average', 'predict_s_oracle'):.2f} |")
    lines += ["", "Identifier accuracy per task (mean over runs):", "", "| task | " + " | ".join(frame["method"].unique()) + " |",
              "|---|" + "---|" * frame["method"].nunique()]
    for task in sorted(records[0]["identifier_per_task"])[:20]:
        values = [np.mean([r["identifier_per_task"].get(task, 0.0) for r in records if r["method"] == m]) for m in frame["method"].unique()]
        lines.append(f"| {task} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one seed, C-Poly only")
    parser.add_argument("--many", action="store_true", help="100 few-shot tasks of load_many_tasks")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int)
    parser.add_argument("--no-arrow", action="store_true", help="skip peft's Arrow")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    profile = PROFILES["many" if args.many else "standard"]
    methods = args.methods or (["C-Poly"] if args.quick else (["C-Poly", "Poly"] if args.many else list(METHODS)))
    seeds = args.seeds or ([0] if args.quick or args.many else [0, 1, 2])
    output = args.output or HERE / "results" / ("task_free_many" if args.many else "task_free")
    output.mkdir(parents=True, exist_ok=True)
    results = output / "results.jsonl"
    records = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    splits = load_splits(profile)
    for method in methods:
        for seed in seeds:
            if any(r["method"] == method and r["seed"] == seed for r in records):
                continue
            print(f"{method} seed {seed} ...", flush=True)
            record = run_one(method, seed, splits, profile, arrow=not args.no_arrow)
            records.append(record)
            with results.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            print(json.dumps({k: round(v, 3) for k, v in record.items() if isinstance(v, float)}), flush=True)
    title = "Predicting without task ids: " + ("100 few-shot tasks" if args.many else "demo tasks")
    text = report([r for r in records if r["method"] in methods and r["seed"] in seeds], title)
    (output / "report.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
