#!/usr/bin/env python
"""Speed and memory benchmark: skillfit methods against peft and the bare backbone.

Every method gets the same batch (MiniLM, 32 texts of 64 tokens, six tasks) in the
same process. Repeats are interleaved (method 1, 2, ..., n, then again), so drifts
of the machine hit all methods alike; the tables show medians and ratios.

* train step: ``zero_grad``, forward, loss, backward, gradient clipping and AdamW
  step, exactly as in ``fit`` (peft models run inside skillfit's loop and head);
* predict: an eval-mode forward pass without gradients, in texts per second;
* peak memory: the most memory one train step allocates on top of what was
  allocated before it (activations, gradients, optimizer updates): on CPU from
  ``torch.profiler``'s allocation events, on CUDA from
  ``torch.cuda.max_memory_allocated``.

Usage::

    python benchmarks/speed.py                  # CPU, or CUDA when present
    python benchmarks/speed.py --repeats 30 --device cpu
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import PeftClassifier  # noqa: E402

import skillfit  # noqa: E402
from skillfit import CPolyClassifier, LoRAClassifier, MTLoRAClassifier, PEMTClassifier, PolyClassifier  # noqa: E402
from skillfit.datasets import load_demo_tasks  # noqa: E402

HERE = Path(__file__).resolve().parent
RANK = 8
METHODS = {
    "LoRA shared": lambda **kw: LoRAClassifier(sharing="shared", **kw),
    "LoRA private": lambda **kw: LoRAClassifier(sharing="private", **kw),
    "Poly (4 skills)": lambda **kw: PolyClassifier(n_skills=4, **kw),
    "Poly-S (4 skills, 4 splits)": lambda **kw: PolyClassifier(n_skills=4, n_splits=4, **kw),
    "C-Poly (4 shared, 1 exclusive)": lambda **kw: CPolyClassifier(n_shared=4, n_exclusive=1, **kw),
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


def benchmark_batch(estimator, X: pd.DataFrame, y: pd.Series) -> dict[str, torch.Tensor]:
    """The fixed benchmark batch in the estimator's own format (every row max_length tokens)."""
    texts = X["text"].tolist()
    task_index = estimator._task_indices(X["task"].to_numpy())
    labels = np.searchsorted(estimator.classes_, y.to_numpy())
    encoded = estimator._encode(texts, task_index, labels)
    return estimator._make_batch(np.arange(len(texts)), encoded)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_train_step(estimator, batch, optimizer, scheduler, bare: bool) -> float:
    synchronize(estimator.device_)
    start = time.perf_counter()
    if bare:
        with estimator.network_.context.bypass():
            estimator._train_step(batch, optimizer, scheduler)
    else:
        estimator._train_step(batch, optimizer, scheduler)
    synchronize(estimator.device_)
    return time.perf_counter() - start


def time_predict(estimator, batch, bare: bool) -> float:
    network = estimator.network_
    network.eval()
    synchronize(estimator.device_)
    start = time.perf_counter()
    with torch.no_grad():
        if bare:
            with network.context.bypass():
                network(batch["input_ids"], batch["attention_mask"], batch["tasks"])
        else:
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats per method (after 2 warm-up rounds)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64, help="tokens per text (texts are lengthened to fill it)")
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when present), 'cpu' or 'cuda'")
    parser.add_argument("--output", type=Path, default=None, help="markdown report (default: benchmarks/results/speed-<device>.md)")
    args = parser.parse_args(argv)
    start = time.perf_counter()

    frame = load_demo_tasks(split="train").frame
    rng = np.random.RandomState(0)
    groups = [group for _, group in frame.groupby("task")]
    rows = []
    for row in range(args.batch_size):  # tasks take turns, so each appears about equally
        group = groups[row % len(groups)]
        # Join random texts of the task so every row fills max_length tokens.
        picked = group.iloc[rng.permutation(len(group))[:12]]
        rows.append({"text": " ".join(picked["text"]), "task": picked["task"].iloc[0], "label": picked["label"].iloc[0]})
    batch_frame = pd.DataFrame(rows)
    # Every task needs two labels for fitting: the fit set is the batch plus one example of each label.
    extra = frame.groupby(["task", "label"]).head(1)
    fit_X = pd.concat([batch_frame, extra])[["text", "task"]]
    fit_y = pd.concat([batch_frame, extra])["label"]
    X, y = batch_frame[["text", "task"]], batch_frame["label"]

    print(f"building {len(METHODS)} models ...", flush=True)
    setups = {}
    for method in METHODS:
        estimator = fitted(method, fit_X, fit_y, args.device, args.batch_size, args.max_length)
        batch = benchmark_batch(estimator, X, y)
        assert batch["input_ids"].shape == (args.batch_size, args.max_length), batch["input_ids"].shape
        optimizer, scheduler = estimator._make_optimizer(10**6)
        setups[method] = (estimator, batch, optimizer, scheduler, False)
    # The floor: the first model with its adapters bypassed (only the head trains).
    bare_estimator = fitted("LoRA shared", fit_X, fit_y, args.device, args.batch_size, args.max_length)
    for name, parameter in bare_estimator.network_.named_parameters():
        parameter.requires_grad_(name.startswith("head."))
    optimizer, scheduler = bare_estimator._make_optimizer(10**6)
    setups[BARE] = (bare_estimator, benchmark_batch(bare_estimator, X, y), optimizer, scheduler, True)
    device = bare_estimator.device_

    train_times = {name: [] for name in setups}
    predict_times = {name: [] for name in setups}
    memory = {name: [] for name in setups}
    for round_ in range(args.repeats + 2):
        for name, (estimator, batch, optimizer, scheduler, bare) in setups.items():
            train = time_train_step(estimator, batch, optimizer, scheduler, bare)
            predict = time_predict(estimator, batch, bare)
            if round_ >= 2:
                train_times[name].append(train)
                predict_times[name].append(predict)
            if round_ in (2, 3, 4):
                memory[name].append(peak_step_memory_mib(estimator, batch, optimizer, scheduler, bare))
        print(f"round {round_ + 1}/{args.repeats + 2} done", flush=True)

    train = {name: statistics.median(times) for name, times in train_times.items()}
    predict = {name: args.batch_size / statistics.median(times) for name, times in predict_times.items()}
    peak = {name: statistics.median(values) for name, values in memory.items()}
    params = {name: setup[0].n_trainable_params_ for name, setup in setups.items()}
    params[BARE] = sum(p.numel() for p in bare_estimator.network_.parameters() if p.requires_grad)

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    lines = [
        f"## Speed and memory, {device_name}",
        "",
        f"Batch {args.batch_size} x {args.max_length} tokens, six tasks, rank {RANK}; medians of {args.repeats} interleaved "
        f"repeats; torch {torch.__version__}, skillfit {skillfit.__version__}.",
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
        f"The bare backbone's train step trains only the head (no backward pass through the backbone), so it is a floor "
        f"for prediction, not for training. Total wall time {time.perf_counter() - start:.0f}s.",
    ]
    report = "\n".join(lines) + "\n"
    output = args.output or HERE / "results" / f"speed-{device.type}.md"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(report)
    print("\n" + report)


if __name__ == "__main__":
    main()
