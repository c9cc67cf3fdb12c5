#!/usr/bin/env python
"""Cost, memory and prediction against the number of tasks, with peers in the same run.

Three tables, every model on the offline MiniLM (rank 8, the estimators' default
target modules), medians of interleaved repeats:

* **train step** at 6, 64, 512 and 2,000 tasks (all models built first and timed
  interleaved, up to ``--interleave-up-to`` tasks): one batch of 32 rows of 64 tokens
  whose task ids are drawn at random (so a batch holds up to 32 distinct tasks), rows
  sorted by task as ``fit`` sorts them; ``zero_grad``, forward, loss, backward,
  clipping and the optimizer step, as in ``fit``. Ratios to the method's own cost at 6
  tasks and to peft Poly's at the same task count;
* **memory**: trainable parameters, the bytes of the training state (trainable
  parameters, their gradients and Adam's two moments) and the peak a train step
  allocates on top (activations; on CPU from ``torch.profiler``'s allocation events, on
  CUDA from ``torch.cuda.max_memory_allocated``), and the per-task cost;
* **predict** on rows spread evenly over 6 and 500 tasks (``--predict-tasks``): texts per second against the
  bare backbone on the same rows, for skillfit's batching (full single-task batches
  merged, leftovers pooled into mixed batches), one short merged batch per task (the
  old batching) and everything unmerged.

Usage::

    python benchmarks/many_tasks.py                       # CPU, or CUDA when present
    python benchmarks/many_tasks.py --tasks 6 64 512 --predict-rows 2000 --repeats 5

With ``--quality``, the report ends with the quality table on ``load_many_tasks``
(``benchmarks/quality.py --many``, resuming its recorded runs: about 45 minutes on 2
CPU cores when none is recorded). The curves are drawn to ``<output>.png`` when
matplotlib is installed.
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
from speed import benchmark_batch, peak_step_memory_mib, time_predict, time_train_step, training_loop  # noqa: E402

import skillfit  # noqa: E402
from skillfit import CPolyClassifier, LoRAClassifier, PolyClassifier  # noqa: E402
from skillfit.datasets import load_demo_tasks  # noqa: E402
from skillfit.estimators._batching import evaluation_batches, token_lengths  # noqa: E402

HERE = Path(__file__).resolve().parent
RANK = 8
METHODS = {
    "Poly (4 skills)": lambda **kw: PolyClassifier(n_skills=4, **kw),
    "C-Poly (4 shared + 1 exclusive)": lambda **kw: CPolyClassifier(n_shared=4, n_exclusive=1, **kw),
    "LoRA private": lambda **kw: LoRAClassifier(sharing="private", **kw),
    "peft Poly (4 skills)": lambda **kw: PeftClassifier(peft_method="poly", n_skills=4, **kw),
}
PEER = "peft Poly (4 skills)"
PREDICT_METHOD = "C-Poly (4 shared + 1 exclusive)"


def filled_texts(n_rows: int, rng: np.random.RandomState) -> list[str]:
    """Real demo texts joined so that each fills 64 tokens."""
    texts = load_demo_tasks(split="train").frame["text"].tolist()
    return [" ".join(texts[i] for i in rng.randint(len(texts), size=12)) for _ in range(n_rows)]


def build(method: str, n_tasks: int, device: str, max_length: int) -> object:
    """The method's estimator for ``n_tasks`` tasks, fitted one quick epoch on two short rows per task."""
    tasks = np.repeat([f"task {t}" for t in range(n_tasks)], 2)
    X = pd.DataFrame({"text": ["a b"] * len(tasks), "task": tasks})
    y = np.tile(["no", "yes"], n_tasks)
    estimator = METHODS[method](
        rank=RANK, max_epochs=1, batch_size=256, max_length=max_length, device=device, random_state=0
    ).fit(X, y)
    return estimator.set_params(batch_size=32)


def training_state_mib(estimator) -> float:
    """Trainable parameters, their gradients and Adam's two moments, in MiB."""
    trainable = sum(p.numel() * p.element_size() for p in estimator.network_.parameters() if p.requires_grad)
    return 4 * trainable / 2**20


def cost_and_memory(args, device: str) -> tuple[list[str], list[str]]:
    """Train-step times, parameters and memory of every method at every task count."""
    rng = np.random.RandomState(0)
    texts = filled_texts(args.batch_size, rng)
    times, memory, distinct, params, state = {}, {}, {}, {}, {}
    batches = {}
    for n_tasks in args.tasks:
        rows = pd.DataFrame({"text": texts, "task": [f"task {t}" for t in rng.randint(n_tasks, size=args.batch_size)]})
        batches[n_tasks] = (rows, pd.Series(rng.choice(["no", "yes"], size=args.batch_size)))
        distinct[n_tasks] = rows["task"].nunique()
    # Models of every count up to --interleave-up-to are built first and timed interleaved
    # (drifts of the machine hit all alike); above it, one model at a time (memory).
    together = [(method, n) for n in args.tasks if n <= args.interleave_up_to for method in METHODS]
    alone = [[(method, n)] for n in args.tasks if n > args.interleave_up_to for method in METHODS]
    for keys in [together, *alone] if together else alone:
        setups = {}
        for method, n_tasks in keys:
            print(f"building {method} with {n_tasks} tasks ...", flush=True)
            estimator = build(method, n_tasks, device, args.max_length)
            batch = benchmark_batch(estimator, *batches[n_tasks])
            optimizer, scheduler = training_loop(estimator).make_optimizer(10**6)
            setups[method, n_tasks] = (estimator, batch, optimizer, scheduler)
            params[method, n_tasks] = estimator.n_trainable_params_
            state[method, n_tasks] = training_state_mib(estimator)
            del estimator, batch, optimizer, scheduler
        for round_ in range(args.repeats + 2):
            for key, (estimator, batch, optimizer, scheduler) in setups.items():
                elapsed = time_train_step(estimator, batch, optimizer, scheduler, False)
                if round_ >= 2:
                    times.setdefault(key, []).append(elapsed)
                if round_ == 2:
                    memory[key] = peak_step_memory_mib(estimator, batch, optimizer, scheduler, False)
            print(f"round {round_ + 1}/{args.repeats + 2}", flush=True)
        del setups
    times = {key: times[key] for key in sorted(times, key=lambda key: (key[1], list(METHODS).index(key[0])))}
    step = {key: statistics.median(values) for key, values in times.items()}
    first = args.tasks[0]
    cost = [
        f"### Train step against the task count (batch {args.batch_size} x {args.max_length} tokens, median of {args.repeats})",
        "",
        "| tasks | distinct tasks in the batch | method | train step (ms) | / own at " + f"{first} tasks | / peft Poly |",
        "|---:|---:|---|---:|---:|---:|",
    ]
    for method, n_tasks in times:
        cost.append(
            f"| {n_tasks} | {distinct[n_tasks]} | {method} | {step[method, n_tasks] * 1e3:.0f} | "
            f"{step[method, n_tasks] / step[method, first]:.2f} | {step[method, n_tasks] / step[PEER, n_tasks]:.2f} |"
        )
    table = [
        "### Memory against the task count",
        "",
        "| tasks | method | trainable params | training state (MiB) | step peak (MiB) | total (MiB) |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for method, n_tasks in times:
        table.append(
            f"| {n_tasks} | {method} | {params[method, n_tasks]:,} | {state[method, n_tasks]:.1f} | "
            f"{memory[method, n_tasks]:.0f} | {state[method, n_tasks] + memory[method, n_tasks]:.0f} |"
        )
    curves = pd.DataFrame([
        {"method": method, "tasks": n_tasks, "step / own at first": step[method, n_tasks] / step[method, first],
         "memory (MiB)": state[method, n_tasks] + memory[method, n_tasks]}
        for method, n_tasks in times
    ])
    last = args.tasks[-1]
    if last > first:
        table += ["", f"Per-task cost, from {first} to {last} tasks:", ""]
    for method in METHODS if last > first else []:
        per_task = (params[method, last] - params[method, first]) / (last - first)
        table.append(f"- {method}: {per_task:,.0f} trainable parameters per task ({per_task * 16 / 2**10:.0f} KiB of training state)")
    return cost + [""], table + [""], curves


def plot_curves(curves: pd.DataFrame, path: Path) -> None:
    """Train-step cost (relative to the fewest tasks) and training memory against the task count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (cost_ax, memory_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    for method, rows in curves.groupby("method", sort=False):
        cost_ax.plot(rows["tasks"], rows["step / own at first"], marker="o", label=method)
        memory_ax.plot(rows["tasks"], rows["memory (MiB)"], marker="o", label=method)
    for ax in (cost_ax, memory_ax):
        ax.set_xscale("log")
        ax.set_xlabel("tasks")
        ax.grid(alpha=0.3)
    cost_ax.set_ylabel("train step / own cost at the fewest tasks")
    memory_ax.set_ylabel("training state + step peak (MiB)")
    memory_ax.set_yscale("log")
    cost_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def predict_table(args, device: str) -> list[str]:
    rng = np.random.RandomState(1)
    texts = filled_texts(args.predict_rows, rng)
    lines = [
        f"### Predict: {args.predict_rows:,} rows of {args.max_length} tokens spread evenly over the tasks, "
        f"{PREDICT_METHOD}, batch 32 (median of {args.predict_repeats})",
        "",
        "| tasks | rows per task | batching | batches | texts/s | / bare backbone |",
        "|---:|---:|---|---:|---:|---:|",
    ]
    for n_tasks in args.predict_tasks:
        estimator = build(PREDICT_METHOD, n_tasks, device, args.max_length)
        tasks = np.asarray([f"task {t}" for t in np.arange(args.predict_rows) % n_tasks])
        encoded = estimator._encode(texts, estimator._task_indices(tasks), None)
        lengths = token_lengths(encoded)
        batchings = {
            "skillfit (full one-task batches merged, leftovers pooled)": list(evaluation_batches(lengths, encoded["tasks"], 32)),
            "one task per batch, merged": list(evaluation_batches(lengths, encoded["tasks"], 32, one_task_per_batch=True)),
        }
        runs = {name: ([estimator._make_batch(rows, encoded) for rows in batches], True) for name, batches in batchings.items()}
        runs["skillfit batching, unmerged"] = (runs[next(iter(batchings))][0], False)
        if args.predict_skillfit_only:
            runs = dict(list(runs.items())[:1])
        bare_batches = [estimator._make_batch(rows, encoded) for rows in np.array_split(np.arange(args.predict_rows), -(-args.predict_rows // 32))]
        times = {name: [] for name in [*runs, "bare"]}
        for round_ in range(args.predict_repeats + 1):
            for name, (batches, merged) in runs.items():
                estimator.set_params(merged_inference=merged)
                elapsed = time_predict(estimator, batches, False)
                if round_:
                    times[name].append(elapsed)
            elapsed = time_predict(estimator, bare_batches, True)
            if round_:
                times["bare"].append(elapsed)
        speed = {name: args.predict_rows / statistics.median(values) for name, values in times.items()}
        for name, (batches, _) in runs.items():
            lines.append(
                f"| {n_tasks} | {args.predict_rows // n_tasks} | {name} | {len(batches)} | {speed[name]:.0f} | {speed[name] / speed['bare']:.2f} |"
            )
        lines.append(f"| {n_tasks} | {args.predict_rows // n_tasks} | bare backbone | {len(bare_batches)} | {speed['bare']:.0f} | 1.00 |")
    return lines + [""]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, nargs="+", default=[6, 64, 512, 2000])
    parser.add_argument("--repeats", type=int, default=9, help="timed train steps per model (after 2 warm-up rounds)")
    parser.add_argument("--interleave-up-to", type=int, default=2000, help="task counts above are timed one model at a time (memory)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--predict-rows", type=int, default=10_000)
    parser.add_argument("--predict-repeats", type=int, default=3)
    parser.add_argument("--predict-tasks", type=int, nargs="+", default=[6, 500])
    parser.add_argument("--predict-skillfit-only", action="store_true",
                        help="time only skillfit's batching against the bare backbone (half the predict time)")
    parser.add_argument("--skip-predict", action="store_true")
    parser.add_argument("--quality", action="store_true", help="end with the quality table of quality.py --many")
    parser.add_argument("--skip-cost", action="store_true", help="only the predict table")
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when present), 'cpu' or 'cuda'")
    parser.add_argument("--output", type=Path, default=None, help="markdown report (default: benchmarks/results/many-tasks-<device>.md)")
    args = parser.parse_args(argv)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    start = time.perf_counter()
    cost, memory, curves = ([], [], None) if args.skip_cost else cost_and_memory(args, device)
    predict = [] if args.skip_predict else predict_table(args, device)
    quality = []
    if args.quality:
        import quality as quality_benchmark

        quality_benchmark.main(["--many"])
        quality = [(HERE / "results" / "many" / "report.md").read_text()]
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
    header = [
        f"## Many tasks, {name}",
        "",
        f"MiniLM, rank {RANK}; torch {torch.__version__}, skillfit {skillfit.__version__}.",
        "",
    ]
    report = "\n".join(header + cost + memory + predict + quality + [f"Total wall time {time.perf_counter() - start:.0f}s."]) + "\n"
    output = args.output or HERE / "results" / f"many-tasks-{device}.md"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(report)
    if curves is not None:
        try:
            plot_curves(curves, output.with_suffix(".png"))
        except ImportError:
            print("matplotlib is not installed: no plot of the curves")
    print("\n" + report)


if __name__ == "__main__":
    main()
