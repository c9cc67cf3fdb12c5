#!/usr/bin/env python
"""Quality benchmark: every skillfit method against its peers on the bundled demo tasks.

Every neural method runs on the same frozen MiniLM backbone, with the same target
modules, training loop, epochs, batch size and masked union-label head; only the
adapters differ. The learning rate of each method is chosen on a validation split
carved from the training data (seed 0); the test split is used only to report.

Usage::

    python benchmarks/quality.py --quick     # under 15 minutes on 2 CPU cores
    python benchmarks/quality.py             # the run in docs/benchmarks.md (about 90 min)
    python benchmarks/quality.py --methods C-Poly Poly --seeds 0
    python benchmarks/quality.py --many      # the 172 few-shot tasks of load_many_tasks

Results are appended to ``<output>/results.jsonl`` as each run finishes, so an
interrupted benchmark resumes where it stopped; ``report.md`` and
``sample_efficiency.png`` are written at the end. Needs ``peft`` (the ``test`` extra)
and, for the plot, ``matplotlib``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import PeftClassifier, fit_per_task, frozen_embeddings, predict_per_task  # noqa: E402

import skillfit  # noqa: E402
from skillfit import CPolyClassifier, LoRAClassifier, MTLoRAClassifier, PEMTClassifier, PolyClassifier  # noqa: E402
from skillfit.datasets import load_demo_tasks, load_many_tasks  # noqa: E402

HERE = Path(__file__).resolve().parent
VALIDATION_FRACTION = 0.2
DATA_SEED = 0

TASK_DESCRIPTIONS = {
    "editorial_sentiment": "sentiment of a newspaper editorial sentence: negative, neutral or positive",
    "movie_sentiment": "sentiment of a movie review sentence: negative or positive",
    "product_sentiment": "sentiment of a product review sentence: negative or positive",
    "question_type": "what kind of answer a question asks for",
    "sms_spam": "whether a text message is spam",
    "tweet_sentiment": "sentiment of a tweet: negative or positive",
}


@dataclasses.dataclass(frozen=True)
class Profile:
    """How much data and training each run gets, and on which bundled tasks."""

    train_per_task: int | None  # drawn from the train split, before the validation carve (None: all)
    test_per_task: int | None  # None: the whole test split
    max_epochs: int
    batch_size: int
    min_steps: int  # small fractions train for more epochs, up to this many optimizer steps
    seeds: tuple[int, ...]
    fractions: tuple[float, ...]
    max_length: int = 64
    group_by_length: bool = False  # batches of similar lengths (every method alike)
    load: Callable[..., object] = load_demo_tasks  # the bundled loader: load_demo_tasks or load_many_tasks
    n_tasks: int | None = None  # a seeded sample of the loader's tasks (None: all)
    methods: tuple[str, ...] | None = None  # the default methods (None: all)


# The many-task claim (docs/benchmarks.md, "Many tasks"): the methods issue 13 compares.
MANY_TASK_METHODS = ("LoRA shared", "LoRA private", "Poly", "Poly-S", "C-Poly", "peft LoRA", "peft Poly")
PROFILES = {
    "quick": Profile(train_per_task=50, test_per_task=60, max_epochs=2, batch_size=16, min_steps=0, seeds=(0, 1, 2), fractions=(1.0,)),
    "standard": Profile(
        train_per_task=150, test_per_task=None, max_epochs=3, batch_size=32, min_steps=30, seeds=(0, 1, 2),
        fractions=(0.05, 0.2, 0.5, 1.0),
    ),
    # 100 of the 172 few-shot tasks, 32 training texts each (fewer where a task has
    # fewer), 12 test texts each: 7 methods x (2 rates + 2 more seeds) in about an
    # hour on 2 CPU cores. All 172 tasks with every text take about 7 min per fit there.
    "many": Profile(
        train_per_task=32, test_per_task=12, max_epochs=2, batch_size=32, min_steps=0, seeds=(0, 1, 2),
        fractions=(1.0,), group_by_length=True, load=load_many_tasks, methods=MANY_TASK_METHODS, n_tasks=100,
    ),
}

# Each neural method: a factory of the estimator for given common settings, and its
# learning-rate grid. Multi-skill methods hold about eight rank-8 LoRAs per layer
# (Poly: 8 skills; C-Poly: 2 shared + 1 exclusive per task x 6 tasks; private LoRA: 6).
LR_GRID = (2e-3, 5e-3)
# peft's Poly scales its update by 1/r instead of alpha/r (16x smaller at r=8,
# alpha=16), so its grid is one step higher.
PEFT_POLY_LR_GRID = (5e-3, 1.5e-2)
NEURAL_METHODS: dict[str, tuple[Callable[..., object], tuple[float, ...]]] = {
    "C-Poly": (lambda **kw: CPolyClassifier(n_shared=2, n_exclusive=1, **kw), LR_GRID),
    "Poly": (lambda **kw: PolyClassifier(n_skills=8, **kw), LR_GRID),
    "LoRA private": (lambda **kw: LoRAClassifier(sharing="private", **kw), LR_GRID),
    "LoRA shared": (lambda **kw: LoRAClassifier(sharing="shared", **kw), LR_GRID),
    "peft Poly": (lambda **kw: PeftClassifier(peft_method="poly", n_skills=8, **kw), PEFT_POLY_LR_GRID),
    "peft LoRA": (lambda **kw: PeftClassifier(peft_method="lora", **kw), LR_GRID),
    "Poly-S": (lambda **kw: PolyClassifier(n_skills=8, n_splits=4, **kw), LR_GRID),
    "MTLoRA": (lambda **kw: MTLoRAClassifier(**kw), LR_GRID),
    "PEMT": (lambda **kw: PEMTClassifier(task_descriptions=TASK_DESCRIPTIONS, **kw), LR_GRID),
}
# Variants for investigating C-Poly and PEMT (not run by default: pass them to --methods).
# They keep the learning rate the method chose in the standard run and change one thing each.
CPOLY_VARIANT_LR = (2e-3,)
VARIANT_METHODS: dict[str, tuple[Callable[..., object], tuple[float, ...]]] = {
    "C-Poly 4+1": (lambda **kw: CPolyClassifier(n_shared=4, n_exclusive=1, **kw), CPOLY_VARIANT_LR),
    "C-Poly router lr 0.2": (
        lambda **kw: CPolyClassifier(n_shared=2, n_exclusive=1, router_learning_rate=0.2, **kw), CPOLY_VARIANT_LR),
    "C-Poly 2 splits x 4 skills": (
        lambda **kw: CPolyClassifier(n_shared=4, n_exclusive=1, n_splits=2, **kw), CPOLY_VARIANT_LR),
    "C-Poly output combine": (
        lambda **kw: CPolyClassifier(n_shared=2, n_exclusive=1, combine="output", **kw), CPOLY_VARIANT_LR),
    # PEMT trains two stages of max_epochs each; this variant gives each stage half (at least one).
    "PEMT half epochs per stage": (
        lambda **kw: PEMTClassifier(task_descriptions=TASK_DESCRIPTIONS, **{**kw, "max_epochs": max(1, kw["max_epochs"] // 2)}),
        (2e-3,)),
}
C_GRID = (0.3, 3.0, 30.0)
MAX_TASK_COLUMNS = 10
CLASSICAL_METHODS = ("TF-IDF + LR", "frozen MiniLM + LR")
ALL_METHODS = CLASSICAL_METHODS + tuple(NEURAL_METHODS)
NEURAL_METHODS.update(VARIANT_METHODS)
# The sample-efficiency sweep: the claim (C-Poly / Poly vs private LoRA) and the references.
FRACTION_METHODS = ("C-Poly", "Poly", "LoRA private") + CLASSICAL_METHODS


# --------------------------------------------------------------------------- data
def _stratified_head(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """``n`` rows of one task, labels interleaved in a seeded order (so prefixes stay stratified)."""
    rng = np.random.RandomState(seed)
    ranked = []
    for _, rows in frame.groupby("label", sort=True):
        order = rng.permutation(len(rows))
        ranked.append(rows.iloc[order].assign(_rank=np.arange(len(rows)) / len(rows)))
    pooled = pd.concat(ranked).sort_values(["_rank", "label"], kind="stable")
    return pooled.head(n).drop(columns="_rank")


def load_splits(profile: Profile) -> dict[str, pd.DataFrame]:
    """Fixed fit / validation / test frames (columns text, task, label) for a profile."""
    train = profile.load(split="train").frame
    test = profile.load(split="test").frame
    if profile.n_tasks is not None:
        tasks = np.random.RandomState(DATA_SEED).choice(sorted(train["task"].unique()), profile.n_tasks, replace=False)
        train, test = train[train["task"].isin(tasks)], test[test["task"].isin(tasks)]
    per_task = profile.train_per_task
    pool = pd.concat([_stratified_head(rows, per_task or len(rows), DATA_SEED) for _, rows in train.groupby("task")])
    strata = pool["task"] + "|" + pool["label"]
    fit, validation = train_test_split(pool, test_size=VALIDATION_FRACTION, stratify=strata, random_state=DATA_SEED)
    if profile.test_per_task is not None:
        test = pd.concat([_stratified_head(rows, profile.test_per_task, DATA_SEED) for _, rows in test.groupby("task")])
    # The fit frame is ordered so that any prefix per task is a stratified sample (fractions).
    fit = pd.concat([_stratified_head(rows, len(rows), DATA_SEED + 1) for _, rows in fit.groupby("task")])
    return {name: frame[["text", "task", "label"]].reset_index(drop=True) for name, frame in
            {"fit": fit, "validation": validation, "test": test}.items()}


def fraction_of(fit: pd.DataFrame, fraction: float) -> pd.DataFrame:
    """The first ``ceil(fraction * n_task)`` rows of each task (stratified by construction)."""
    return pd.concat([rows.head(max(1, math.ceil(fraction * len(rows)))) for _, rows in fit.groupby("task", sort=False)])


def per_task_accuracy(frame: pd.DataFrame, predictions: np.ndarray) -> dict[str, float]:
    correct = frame["label"].to_numpy() == np.asarray(predictions)
    return {task: float(correct[(frame["task"] == task).to_numpy()].mean()) for task in sorted(frame["task"].unique())}


# --------------------------------------------------------------------------- runs
class Runner:
    """Runs and records (method, fraction, seed, setting) results, resuming from a JSONL file."""

    def __init__(self, profile: Profile, splits: dict[str, pd.DataFrame], results_path: Path) -> None:
        self.profile = profile
        self.splits = splits
        self.results_path = results_path
        self.records: list[dict] = []
        if results_path.exists():
            self.records = [json.loads(line) for line in results_path.read_text().splitlines() if line.strip()]
        self._embeddings: dict[str, np.ndarray] | None = None

    def find(self, **key) -> dict | None:
        for record in self.records:
            if all(record.get(k) == v for k, v in key.items()):
                return record
        return None

    def _save(self, record: dict) -> None:
        self.records.append(record)
        with self.results_path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        test = f"test {record['test_mean']:.3f}" if "test_mean" in record else ""
        print(
            f"  {record['method']:<20} fraction {record['fraction']:<5} seed {record['seed']} {record['setting']:<8} "
            f"val {record['validation_mean']:.3f} {test}  ({record['train_time_s']:.0f}s)",
            flush=True,
        )

    def epochs_for(self, n_rows: int) -> int:
        n_batches = math.ceil(n_rows / self.profile.batch_size)
        return max(self.profile.max_epochs, math.ceil(self.profile.min_steps / n_batches))

    def settings(self, method: str) -> list[str]:
        """The candidate settings of ``method``, as recorded: ``"C=3"`` or a learning rate such as ``"0.005"``."""
        if method in CLASSICAL_METHODS:
            return [f"C={C:g}" for C in C_GRID]
        return [f"{lr:g}" for lr in NEURAL_METHODS[method][1]]

    def seeds_of(self, method: str) -> tuple[int, ...]:
        """The logistic regressions are deterministic: one run (seed 0) stands for every seed."""
        return (0,) if method in CLASSICAL_METHODS else self.profile.seeds

    def run(self, method: str, setting: str, fraction: float, seed: int) -> dict:
        """The record of one run, trained and scored unless already recorded."""
        key = dict(method=method, fraction=fraction, seed=seed, setting=setting)
        done = self.find(**key)
        if done is not None:
            return done
        fit = fraction_of(self.splits["fit"], fraction)
        start = time.perf_counter()
        if method in CLASSICAL_METHODS:
            record = dict(key, n_train=len(fit), epochs=0, n_trainable_params=0)
            predict = self._fit_classical(method, float(setting.removeprefix("C=")), fit)
        else:
            estimator = NEURAL_METHODS[method][0](
                learning_rate=float(setting),
                max_epochs=self.epochs_for(len(fit)),
                batch_size=self.profile.batch_size,
                max_length=self.profile.max_length,
                group_by_length=self.profile.group_by_length,
                random_state=seed,
            )
            estimator.fit(fit[["text", "task"]], fit["label"])
            record = dict(
                key,
                n_train=len(fit),
                epochs=estimator.n_iter_,
                n_trainable_params=int(estimator.n_trainable_params_),
                train_time_s=time.perf_counter() - start,
            )
            predict = lambda frame: estimator.predict(frame[["text", "task"]])  # noqa: E731
        # Every run is also scored on test, for the report only: selection reads validation.
        for split in ("validation", "test"):
            record[split] = per_task_accuracy(self.splits[split], predict(self.splits[split]))
            record[f"{split}_mean"] = float(np.mean(list(record[split].values())))
        record.setdefault("train_time_s", time.perf_counter() - start)  # classical: fit and scoring
        self._save(record)
        return record

    def _features(self, method: str, frame: pd.DataFrame):
        if method == "TF-IDF + LR":
            return frame["text"].tolist()
        if self._embeddings is None:
            texts = pd.concat([self.splits[name]["text"] for name in ("fit", "validation", "test")]).unique().tolist()
            vectors = frozen_embeddings(texts, max_length=self.profile.max_length)
            self._embeddings = dict(zip(texts, vectors))
        return np.stack([self._embeddings[text] for text in frame["text"]])

    def _fit_classical(self, method: str, C: float, fit: pd.DataFrame) -> Callable[[pd.DataFrame], np.ndarray]:
        """The predict function of per-task logistic regressions fitted on the method's features."""

        def make_model():
            if method == "TF-IDF + LR":
                return make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), LogisticRegression(C=C, max_iter=5000))
            return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000))

        models = fit_per_task(make_model, self._features(method, fit), fit["label"].to_numpy(), fit["task"].to_numpy())
        return lambda frame: predict_per_task(models, self._features(method, frame), frame["task"].to_numpy())

    def has_selection(self, method: str) -> bool:
        """Whether every candidate setting of ``method`` already has a recorded selection run."""
        seed = self.seeds_of(method)[0]
        return all(self.find(method=method, fraction=1.0, seed=seed, setting=setting) for setting in self.settings(method))

    def select_setting(self, method: str) -> str:
        """The setting with the best validation accuracy at the full fit set, first seed."""
        seed = self.seeds_of(method)[0]
        candidates = [self.run(method, setting, 1.0, seed) for setting in self.settings(method)]
        best = max(candidates, key=lambda record: record["validation_mean"])  # first wins ties
        scores = ", ".join(f"{c['setting']}: {c['validation_mean']:.3f}" for c in candidates)
        print(f"  -> {method}: chose {best['setting']} on validation ({scores})", flush=True)
        return best["setting"]

    def run_final(self, method: str, setting: str, fraction: float) -> None:
        for seed in self.seeds_of(method):
            self.run(method, setting, fraction, seed)


# ------------------------------------------------------------------------ report
def summarise(records: list[dict], chosen: dict[str, str], methods: list[str], seeds: tuple[int, ...]) -> pd.DataFrame:
    """One row per (method, fraction): mean and std over seeds of the test accuracy."""
    rows = []
    for method in methods:
        for record_fraction in sorted({r["fraction"] for r in records if r["method"] == method}):
            runs = [r for r in records if r["method"] == method and r["fraction"] == record_fraction
                    and r["setting"] == chosen[method]]
            if method in CLASSICAL_METHODS:
                runs = runs[:1] * len(seeds)  # deterministic: the same result for every seed
            else:
                runs = [r for r in runs if r["seed"] in seeds]
            if not runs:
                continue
            means = np.array([r["test_mean"] for r in runs])
            row = dict(
                method=method, fraction=record_fraction, setting=chosen[method], n_seeds=len(runs),
                mean=means.mean(), std=means.std(ddof=1) if len(means) > 1 else 0.0,
                params=runs[0]["n_trainable_params"], train_time_s=float(np.median([r["train_time_s"] for r in runs])),
                n_train=runs[0]["n_train"], epochs=runs[0]["epochs"],
            )
            for task in runs[0]["test"]:
                row[task] = float(np.mean([r["test"][task] for r in runs]))
            rows.append(row)
    return pd.DataFrame(rows)


def markdown_tables(summary: pd.DataFrame, profile_name: str, profile: Profile, splits, fit_seconds: float) -> str:
    full = summary[summary["fraction"] == 1.0]
    tasks = [c for c in full.columns if c in set(splits["test"]["task"])]
    if len(tasks) > MAX_TASK_COLUMNS:
        tasks = []  # one column per task stays readable for the demo tasks only (summary.csv has them all)
    lines = [
        f"## Quality, profile `{profile_name}`",
        "",
        f"Fit set {len(splits['fit'])} texts ({profile.train_per_task or 'all'} per task before a "
        f"{VALIDATION_FRACTION:.0%} validation carve: validation {len(splits['validation'])}), "
        f"test {len(splits['test'])} texts; {profile.max_epochs} epochs, batch {profile.batch_size}, "
        f"max_length {profile.max_length}; seeds {list(profile.seeds)}. Mean test accuracy over the "
        f"{splits['test']['task'].nunique()} tasks, mean ± std over seeds. Settings chosen on validation at seed 0.",
    ]
    is_variant = full["method"].isin(list(VARIANT_METHODS))
    for title, rows in (("", full[~is_variant]), ("### Variants (one change each, learning rate kept)", full[is_variant])):
        if rows.empty:
            continue
        lines += ["", title, ""] if title else [""]
        lines += [
            "| method | mean acc | ± std | trainable params | train time (s, median) | chosen |" + "".join(f" {t} |" for t in tasks),
            "|---|---:|---:|---:|---:|---|" + "---:|" * len(tasks),
        ]
        for _, row in rows.sort_values("mean", ascending=False).iterrows():
            lines.append(
                f"| {row['method']} | {row['mean']:.3f} | {row['std']:.3f} | {row['params']:,} | {row['train_time_s']:.0f} | "
                f"{row['setting']} |" + "".join(f" {row[task]:.3f} |" for task in tasks)
            )
    fractions = sorted(summary["fraction"].unique())
    if len(fractions) > 1:
        lines += ["", "### Sample efficiency: mean test accuracy (± std over seeds) by fraction of the fit set", ""]
        lines += ["| method | " + " | ".join(f"{f:.0%}" for f in fractions) + " |", "|---|" + "---:|" * len(fractions)]
        swept = summary.groupby("method", sort=False)["fraction"].nunique()
        for method in swept[swept > 1].index:
            cells = []
            for fraction in fractions:
                match = summary[(summary["method"] == method) & (summary["fraction"] == fraction)]
                cells.append(f"{match['mean'].iloc[0]:.3f} ± {match['std'].iloc[0]:.3f}" if len(match) else "")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        sizes = {f: len(fraction_of(splits["fit"], f)) for f in fractions}
        lines += ["", "Fit-set sizes: " + ", ".join(f"{f:.0%}: {n}" for f, n in sizes.items()) + "."]
    lines += [
        "",
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}; torch {torch.__version__}, "
        f"skillfit {skillfit.__version__}. Sum of the recorded fit times: {fit_seconds / 60:.0f} min.",
    ]
    return "\n".join(lines) + "\n"


def plot_sample_efficiency(summary: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for method in summary["method"].unique():
        rows = summary[summary["method"] == method].sort_values("fraction")
        if len(rows) < 2:
            continue
        ax.errorbar(rows["fraction"], rows["mean"], yerr=rows["std"], marker="o", capsize=3, label=method)
    ax.set_xscale("log")
    ticks = sorted(summary["fraction"].unique())
    ax.set_xticks(ticks, [f"{t:.0%}" for t in ticks])
    ax.set_xlabel("fraction of each task's training data")
    ax.set_ylabel("mean test accuracy over tasks")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small profile, under 15 minutes on 2 CPU cores")
    parser.add_argument("--many", action="store_true", help="the 172 few-shot tasks of load_many_tasks")
    parser.add_argument("--methods", nargs="+", choices=ALL_METHODS + tuple(VARIANT_METHODS),
                        metavar="METHOD", help=f"methods to run (default: all of {', '.join(ALL_METHODS)}, "
                        f"with --many {', '.join(MANY_TASK_METHODS)}; "
                        f"C-Poly variants: {', '.join(VARIANT_METHODS)})")
    parser.add_argument("--seeds", nargs="+", type=int, help="override the profile's seeds")
    parser.add_argument("--no-fractions", action="store_true", help="skip the sample-efficiency sweep")
    parser.add_argument("--output", type=Path, help="results folder (default: benchmarks/results/<profile>)")
    args = parser.parse_args(argv)

    if args.quick and args.many:
        parser.error("--quick and --many name two profiles: pass one")
    profile_name = "quick" if args.quick else "many" if args.many else "standard"
    profile = PROFILES[profile_name]
    methods = args.methods or list(profile.methods or ALL_METHODS)
    if args.seeds:
        profile = dataclasses.replace(profile, seeds=tuple(args.seeds))
    if args.no_fractions:
        profile = dataclasses.replace(profile, fractions=(1.0,))
    output = args.output or HERE / "results" / profile_name
    output.mkdir(parents=True, exist_ok=True)
    splits = load_splits(profile)
    runner = Runner(profile, splits, output / "results.jsonl")
    print(f"profile {profile_name}: fit {len(splits['fit'])}, validation {len(splits['validation'])}, "
          f"test {len(splits['test'])} texts; results in {output}", flush=True)

    chosen = {}
    for method in methods:
        print(f"[{method}] choosing the setting on validation", flush=True)
        chosen[method] = runner.select_setting(method)
        runner.run_final(method, chosen[method], 1.0)
    for fraction in [f for f in profile.fractions if f != 1.0]:
        for method in [m for m in methods if m in FRACTION_METHODS]:
            print(f"[{method}] fraction {fraction}", flush=True)
            runner.run_final(method, chosen[method], fraction)

    # The report covers this invocation's methods and every other one already recorded.
    reported = [m for m in ALL_METHODS + tuple(VARIANT_METHODS) if m in chosen or runner.has_selection(m)]
    for method in reported:
        if method not in chosen:
            chosen[method] = runner.select_setting(method)
    summary = summarise(runner.records, chosen, reported, profile.seeds)
    summary.to_csv(output / "summary.csv", index=False)
    recorded = sum(record["train_time_s"] for record in runner.records)
    report = markdown_tables(summary, profile_name, profile, splits, recorded)
    if len(profile.fractions) > 1:
        plot_sample_efficiency(summary, output / "sample_efficiency.png")
        report += "\n![sample efficiency](sample_efficiency.png)\n"
    (output / "report.md").write_text(report)
    print("\n" + report)


if __name__ == "__main__":
    main()
