#!/usr/bin/env python
"""Speed and memory benchmark: skillfit methods against peft and the bare backbone.

Every method gets the same batch (MiniLM, 32 texts of 64 tokens, six tasks) in the
same process. Repeats are interleaved (method 1, 2, ..., n, then again), so drifts
of the machine hit all methods alike; the tables show medians and ratios.

* train step: ``zero_grad``, forward, loss, backward, gradient clipping and AdamW
  step, exactly as in ``fit`` (peft models run inside skillfit's loop and head); the
  batch's rows are sorted by task as ``fit`` sorts them, and one extra row runs
  C-Poly on the unsorted batch (the per-example gather path) to show what the
  per-task slices save;
* predict: eval-mode forward passes without gradients over the same 6 single-task
  batches of 32 texts for every model, as ``predict`` batches them, in texts per
  second; skillfit models fold each task's update into the weights
  (``merged_inference``), and one extra row runs C-Poly unmerged;
* peak memory: the most memory one train step allocates on top of what was
  allocated before it (activations, gradients, optimizer updates): on CPU from
  ``torch.profiler``'s allocation events, on CUDA from
  ``torch.cuda.max_memory_allocated``.

A second table times one training epoch on real demo texts (varied lengths) with and
without length-aware batching (``group_by_length``) and compares test accuracy over
three seeds; a third lists the ops that take C-Poly's train step time
(``torch.profiler``).

Usage::

    python benchmarks/speed.py                  # CPU, or CUDA when present
    python benchmarks/speed.py --repeats 30 --device cpu
    python benchmarks/speed.py --skip-epochs    # only the fixed-batch tables
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import PeftClassifier  # noqa: E402

import skillfit  # noqa: E402
from skillfit import CPolyClassifier, LoRAClassifier, MTLoRAClassifier, PEMTClassifier, PolyClassifier  # noqa: E402
from skillfit.datasets import load_demo_tasks  # noqa: E402
from skillfit.estimators._batching import token_lengths, training_batches  # noqa: E402

HERE = Path(__file__).resolve().parent
RANK = 8
EPOCHS = 2  # of the accuracy runs in the length-aware batching table
METHODS = {
    "LoRA shared": lambda **kw: LoRAClassifier(sharing="shared", **kw),
    "LoRA private": lambda **kw: LoRAClassifier(sharing="private", **kw),
    "Poly (4 skills)": lambda **kw: PolyClassifier(n_skills=4, **kw),
    "Poly-S (4 skills, 4 splits)": lambda **kw: PolyClassifier(n_skills=4, n_splits=4, **kw),
    "C-Poly (4 shared, 1 exclusive)": lambda **kw: CPolyClassifier(n_shared=4, n_exclusive=1, **kw),
    "C-Poly, unmerged predict": lambda **kw: CPolyClassifier(n_shared=4, n_exclusive=1, merged_inference=False, **kw),
    "C-Poly, unsorted rows (gather)": lambda **kw: CPolyClassifier(n_shared=4, n_exclusive=1, **kw),
    "MTLoRA": lambda **kw: MTLoRAClassifier(**kw),
    "PEMT (stage 2)": lambda **kw: PEMTClassifier(**kw),
    "peft LoRA": lambda **kw: PeftClassifier(peft_method="lora", **kw),
    "peft Poly (4 skills)": lambda **kw: PeftClassifier(peft_method="poly", n_skills=4, **kw),
}
BARE = "bare backbone (no adapters)"


def fitted(method: str, X: pd.DataFrame, y: pd.Series, device: str, batch_size: int, max_length: int):
    """The method's estimator after a one-epoch fit on one batch (builds network, tokenizer, device)."""
    estimator = METHODS[method](
        rank=RANK, max_epochs=1, batch_size=batch_size, max_length=max_length, device=device, random_state=0
    )
    return estimator.fit(X, y)


def benchmark_batch(estimator, X: pd.DataFrame, y: pd.Series, sort_by_task: bool = True) -> dict[str, torch.Tensor]:
    """The fixed benchmark batch in the estimator's own format (every row max_length tokens).

    Rows are sorted by task, as ``fit`` sorts each batch, unless ``sort_by_task`` is False.
    """
    task_index = estimator._task_indices(X["task"].to_numpy())
    order = np.argsort(task_index, kind="stable") if sort_by_task else np.arange(len(X))
    labels = np.searchsorted(estimator.classes_, y.to_numpy())
    encoded = estimator._encode(X["text"].tolist(), task_index, labels)
    return estimator._make_batch(order, encoded)


def predict_batches(estimator, X: pd.DataFrame) -> list[dict[str, torch.Tensor]]:
    """The single-task batches ``predict`` would make of ``X``."""
    encoded = estimator._encode(X["text"].tolist(), estimator._task_indices(X["task"].to_numpy()), None)
    return [estimator._make_batch(rows, encoded) for rows in estimator._iter_eval_batches(encoded)]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_LOOPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def training_loop(estimator):
    """The estimator's training loop, built once, when its optimizer is made (never inside a timed step)."""
    if estimator not in _LOOPS:
        _LOOPS[estimator] = estimator._training_loop(np.random.default_rng(0))
    return _LOOPS[estimator]


def time_train_step(estimator, batch, optimizer, scheduler, bare: bool) -> float:
    synchronize(estimator.device_)
    start = time.perf_counter()
    if bare:
        with estimator.network_.context.bypass():
            training_loop(estimator).train_step(batch, optimizer, scheduler)
    else:
        training_loop(estimator).train_step(batch, optimizer, scheduler)
    synchronize(estimator.device_)
    return time.perf_counter() - start


def time_predict(estimator, batches, bare: bool) -> float:
    """Seconds for eval forward passes over ``batches``, in the estimator's inference scope."""
    network = estimator.network_
    network.eval()
    synchronize(estimator.device_)
    start = time.perf_counter()
    with torch.no_grad(), (network.context.bypass() if bare else estimator._inference()):
        for batch in batches:
            network(batch["input_ids"], batch["attention_mask"], batch["tasks"])
    synchronize(estimator.device_)
    return time.perf_counter() - start


def peak_step_memory_mib(estimator, batch, optimizer, scheduler, bare: bool) -> float:
    """Peak memory a train step allocates above what is allocated before it, in MiB."""
    device = estimator.device_
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        time_train_step(estimator, batch, optimizer, scheduler, bare)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    # CPU: replay the net memory each profiled op allocates (frees outside ops are
    # "[memory]" events) in the order the ops started.
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profiler:
        time_train_step(estimator, batch, optimizer, scheduler, bare)
    events = sorted((e for e in profiler.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
    running = peak = 0
    for event in events:
        running += event.self_cpu_memory_usage
        peak = max(peak, running)
    return peak / 2**20


def filled_rows(groups: list[pd.DataFrame], n_rows: int, rng: np.random.RandomState) -> pd.DataFrame:
    """Rows whose texts join random texts of one task, so each fills max_length tokens; tasks take turns."""
    rows = []
    for row in range(n_rows):
        group = groups[row % len(groups)]
        picked = group.iloc[rng.permutation(len(group))[:12]]
        rows.append({"text": " ".join(picked["text"]), "task": picked["task"].iloc[0], "label": picked["label"].iloc[0]})
    return pd.DataFrame(rows)


def epoch_table(device: str, repeats: int, max_length: int) -> list[str]:
    """One epoch's time on real texts with and without length-aware batching, and accuracy over 3 seeds."""
    train = load_demo_tasks(split="train").frame.groupby("task").head(80)
    test = load_demo_tasks(split="test").frame
    X, y = train[["text", "task"]], train["label"]
    settings = dict(n_shared=4, n_exclusive=1, rank=RANK, batch_size=32, max_length=max_length, device=device)
    times = {True: [], False: []}
    for _ in range(repeats):  # interleaved
        for grouped in (True, False):
            estimator = CPolyClassifier(**settings, max_epochs=1, random_state=0, group_by_length=grouped).fit(X, y)
            times[grouped].append(estimator.history_[0]["time"])
    accuracy = {True: [], False: []}
    padding = {}
    for seed in range(3):
        for grouped in (True, False):
            estimator = CPolyClassifier(**settings, max_epochs=EPOCHS, random_state=seed, group_by_length=grouped).fit(X, y)
            accuracy[grouped].append(estimator.score(test[["text", "task"]], test["label"]))
            encoded = estimator._encode(X["text"].tolist(), estimator._task_indices(X["task"].to_numpy()), None)
            lengths = token_lengths(encoded)
            batches = training_batches(encoded["tasks"], estimator.batch_size, np.random.default_rng(seed), lengths=lengths if grouped else None)
            padded = sum(lengths[batch].max() * len(batch) for batch in batches)
            padding[grouped] = 1 - lengths.sum() / padded
    median = {key: statistics.median(value) for key, value in times.items()}
    lines = [
        f"### Length-aware batching: C-Poly, {len(X)} demo texts (up to {max_length} tokens), batch 32",
        "",
        "| batching | padding share | epoch time (s, median of " + str(repeats) + f") | test accuracy, {EPOCHS} epochs (mean ± std over 3 seeds) |",
        "|---|---:|---:|---:|",
    ]
    for grouped, name in ((False, "random"), (True, "group_by_length")):
        lines.append(f"| {name} | {padding[grouped]:.0%} | {median[grouped]:.1f} | {np.mean(accuracy[grouped]):.3f} ± {np.std(accuracy[grouped]):.3f} |")
    lines += ["", f"Epoch time ratio, group_by_length / random: {median[True] / median[False]:.2f}.", ""]
    return lines


def profile_table(estimator, batch, optimizer, scheduler, top: int = 12) -> list[str]:
    """The ops that take a train step's time, from torch.profiler."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        time_train_step(estimator, batch, optimizer, scheduler, False)
    averages = sorted(profiler.key_averages(), key=lambda event: event.self_cpu_time_total, reverse=True)
    total = sum(event.self_cpu_time_total for event in averages)
    lines = [
        f"### Where C-Poly's train step spends its time (torch.profiler, self CPU time, top {top})",
        "",
        "| op | calls | self time (ms) | share |",
        "|---|---:|---:|---:|",
    ]
    for event in averages[:top]:
        lines.append(f"| `{event.key}` | {event.count} | {event.self_cpu_time_total / 1e3:.1f} | {event.self_cpu_time_total / total:.1%} |")
    return lines + [""]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats per method (after 2 warm-up rounds)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64, help="tokens per text (texts are lengthened to fill it)")
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when present), 'cpu' or 'cuda'")
    parser.add_argument("--skip-epochs", action="store_true", help="skip the length-aware batching table")
    parser.add_argument("--output", type=Path, default=None, help="markdown report (default: benchmarks/results/speed-<device>.md)")
    args = parser.parse_args(argv)
    start = time.perf_counter()

    frame = load_demo_tasks(split="train").frame
    rng = np.random.RandomState(0)
    groups = [group for _, group in frame.groupby("task")]
    batch_frame = filled_rows(groups, args.batch_size, rng)
    predict_frame = filled_rows(groups, len(groups) * args.batch_size, rng)  # one full batch per task
    # Every task needs two labels for fitting: the fit set is the batch plus one example of each label.
    extra = frame.groupby(["task", "label"]).head(1)
    fit_X = pd.concat([batch_frame, extra])[["text", "task"]]
    fit_y = pd.concat([batch_frame, extra])["label"]
    X, y = batch_frame[["text", "task"]], batch_frame["label"]

    print(f"building {len(METHODS)} models ...", flush=True)
    setups = {}
    for method in METHODS:
        estimator = fitted(method, fit_X, fit_y, args.device, args.batch_size, args.max_length)
        batch = benchmark_batch(estimator, X, y, sort_by_task="unsorted" not in method)
        assert batch["input_ids"].shape == (args.batch_size, args.max_length), batch["input_ids"].shape
        optimizer, scheduler = training_loop(estimator).make_optimizer(10**6)
        setups[method] = (estimator, batch, predict_batches(estimator, predict_frame), optimizer, scheduler, False)
    # The floor: the first model with its adapters bypassed (only the head trains).
    bare_estimator = fitted("LoRA shared", fit_X, fit_y, args.device, args.batch_size, args.max_length)
    for name, parameter in bare_estimator.network_.named_parameters():
        parameter.requires_grad_(name.startswith("head."))
    optimizer, scheduler = training_loop(bare_estimator).make_optimizer(10**6)
    setups[BARE] = (
        bare_estimator, benchmark_batch(bare_estimator, X, y), predict_batches(bare_estimator, predict_frame),
        optimizer, scheduler, True,
    )
    device = bare_estimator.device_

    train_times = {name: [] for name in setups}
    predict_times = {name: [] for name in setups}
    memory = {name: [] for name in setups}
    for round_ in range(args.repeats + 2):
        for name, (estimator, batch, batches, optimizer, scheduler, bare) in setups.items():
            train = time_train_step(estimator, batch, optimizer, scheduler, bare)
            predict = time_predict(estimator, batches, bare)
            if round_ >= 2:
                train_times[name].append(train)
                predict_times[name].append(predict)
            if round_ in (2, 3, 4):
                memory[name].append(peak_step_memory_mib(estimator, batch, optimizer, scheduler, bare))
        print(f"round {round_ + 1}/{args.repeats + 2} done", flush=True)

    n_predict = len(predict_frame)
    train = {name: statistics.median(times) for name, times in train_times.items()}
    predict = {name: n_predict / statistics.median(times) for name, times in predict_times.items()}
    peak = {name: statistics.median(values) for name, values in memory.items()}
    params = {name: setup[0].n_trainable_params_ for name, setup in setups.items()}
    params[BARE] = sum(p.numel() for p in bare_estimator.network_.parameters() if p.requires_grad)

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    lines = [
        f"## Speed and memory, {device_name}",
        "",
        f"Train step: batch {args.batch_size} x {args.max_length} tokens, six tasks, rank {RANK}. Predict: "
        f"{n_predict} texts of {args.max_length} tokens in {len(groups)} single-task batches. Medians of {args.repeats} "
        f"interleaved repeats; torch {torch.__version__}, skillfit {skillfit.__version__}.",
        "",
        "| method | trainable params | train step (ms) | / peft LoRA | / peft Poly | predict (texts/s) | / bare | / peft Poly | peak step memory (MiB) | / peft LoRA |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in setups:
        lines.append(
            f"| {name} | {params[name]:,} | {train[name] * 1e3:.0f} | {train[name] / train['peft LoRA']:.2f} | "
            f"{train[name] / train['peft Poly (4 skills)']:.2f} | {predict[name]:.0f} | {predict[name] / predict[BARE]:.2f} | "
            f"{predict[name] / predict['peft Poly (4 skills)']:.2f} | {peak[name]:.0f} | {peak[name] / peak['peft LoRA']:.2f} |"
        )
    lines += [
        "",
        "The bare backbone's train step trains only the head (no backward pass through the backbone), so it is a floor "
        "for prediction, not for training.",
        "",
    ]
    cpoly = setups["C-Poly (4 shared, 1 exclusive)"]
    lines += profile_table(cpoly[0], cpoly[1], cpoly[3], cpoly[4])
    if not args.skip_epochs:
        print("timing epochs with and without length-aware batching ...", flush=True)
        lines += epoch_table(args.device, 3, 128)
    lines.append(f"Total wall time {time.perf_counter() - start:.0f}s.")
    report = "\n".join(lines) + "\n"
    output = args.output or HERE / "results" / f"speed-{device.type}.md"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(report)
    print("\n" + report)


if __name__ == "__main__":
    main()
