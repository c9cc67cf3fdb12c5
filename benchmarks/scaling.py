#!/usr/bin/env python
"""Scaling out: a search on Dask workers against the same search in one process, and
a fit with ``n_devices=2`` against ``n_devices=1``, measured in the same run.

* search: ``GridSearchCV`` over 4 candidates (rank x skills) x 2 folds of
  ``PolyClassifier`` on the demo tasks (MiniLM), first with ``n_jobs=1`` in this
  process, then with ``n_jobs=2`` under ``joblib.parallel_config(backend="dask")`` on a
  ``LocalCluster`` of 2 worker processes. On the CPU each worker has
  ``cores / 2`` threads, and the sequential search all the cores: the comparison is of
  the same machine used two ways. The table also checks that both searches found the
  same mean test scores, and how often each worker loaded the backbone.
* fit: one ``CPolyClassifier.fit`` with ``n_devices=1`` and with ``n_devices=2``
  (CPU processes with gloo, or one GPU each with NCCL), wall time with the processes'
  start, the training time alone (``history_``), test accuracy, and the largest
  difference of their predicted probabilities, next to that of two one-process fits
  with different seeds (the run-to-run yardstick: MiniLM trains with dropout).

Usage::

    python benchmarks/scaling.py                       # CPU, or CUDA when present
    python benchmarks/scaling.py --rows 640 --epochs 1 --device cpu
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import joblib
import numpy as np
import torch
from sklearn.model_selection import GridSearchCV

import skillfit
from skillfit import CPolyClassifier, PolyClassifier
from skillfit.backbones import backbone_cache_info, resolve_device
from skillfit.datasets import load_demo_tasks

HERE = Path(__file__).resolve().parent
GRID = {"rank": [4, 8], "n_skills": [2, 4]}


def demo_rows(n_rows: int, seed: int = 0):
    X, y = load_demo_tasks(split="train", return_X_y=True)
    rows = np.random.default_rng(seed).permutation(len(X))[:n_rows]
    return X.iloc[rows].reset_index(drop=True), y.iloc[rows].reset_index(drop=True)


def time_search(X, y, args) -> dict:
    from dask.distributed import Client, LocalCluster

    base = PolyClassifier(max_epochs=args.epochs, max_length=64, random_state=0, device=args.device)
    start = time.perf_counter()
    sequential = GridSearchCV(base, GRID, cv=2, n_jobs=1, refit=False).fit(X, y)
    sequential_s = time.perf_counter() - start
    cores = len(os.sched_getaffinity(0))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        start = time.perf_counter()
        with joblib.parallel_config(backend="dask"):
            on_dask = GridSearchCV(base, GRID, cv=2, n_jobs=2, refit=False).fit(X, y)
        dask_s = time.perf_counter() - start
        loads = client.run(lambda: backbone_cache_info().misses)
        threads = client.run(torch.get_num_threads)
    difference = np.abs(sequential.cv_results_["mean_test_score"] - on_dask.cv_results_["mean_test_score"]).max()
    return {"sequential_s": sequential_s, "dask_s": dask_s, "cores": cores, "loads": sorted(loads.values()),
            "threads": sorted(threads.values()), "score_difference": float(difference)}


def time_fit(X, y, args) -> dict:
    """n_devices=1 and 2 with seed 0, and n_devices=1 with seed 1: the run-to-run yardstick."""
    X_test, y_test = load_demo_tasks(split="test", return_X_y=True)
    X_test, y_test = X_test.iloc[:args.test_rows], y_test.iloc[:args.test_rows]
    results = {}
    for key, n_devices, seed in (("one", 1, 0), ("two", 2, 0), ("one, seed 1", 1, 1)):
        estimator = CPolyClassifier(n_shared=4, n_exclusive=1, max_epochs=args.epochs, max_length=64,
                                    random_state=seed, device=args.device, n_devices=n_devices)
        start = time.perf_counter()
        estimator.fit(X, y)
        wall = time.perf_counter() - start
        results[key] = {"wall_s": wall, "train_s": sum(r["time"] for r in estimator.history_),
                        "proba": estimator.predict_proba(X_test), "accuracy": estimator.score(X_test, y_test)}
    difference = lambda a, b: float(np.abs(results[a]["proba"] - results[b]["proba"]).max())  # noqa: E731
    results["two_processes_difference"] = difference("one", "two")
    results["seed_difference"] = difference("one", "one, seed 1")
    return results


def report(search: dict, fit: dict, args, device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()}, {search['cores']} cores)"
    lines = [
        f"## Scaling out, {name}",
        "",
        f"MiniLM, demo tasks ({args.rows} rows), {args.epochs} epoch(s), max_length 64; torch {torch.__version__}, "
        f"skillfit {skillfit.__version__}.",
        "",
        "### Search: 4 candidates x 2 folds",
        "",
        "| run | wall (s) | / sequential |",
        "|---|---:|---:|",
        f"| one process, n_jobs=1 | {search['sequential_s']:.1f} | 1.00 |",
        f"| 2 Dask workers x 1 thread, n_jobs=2 | {search['dask_s']:.1f} | {search['dask_s'] / search['sequential_s']:.2f} |",
        "",
        f"Backbone loads per worker: {search['loads']}; torch threads per worker: {search['threads']}; "
        f"largest difference of mean test scores: {search['score_difference']:.1e}.",
        "",
        "### One fit on one and on two processes (CPolyClassifier 4+1)",
        "",
    ]
    if fit is None:
        return "\n".join(lines + ["n_devices=2 needs two GPUs; this machine has one.", ""])
    lines += [
        "| fit | wall with start (s) | training (s) | / n_devices=1 (training) | test accuracy |",
        "|---|---:|---:|---:|---:|",
    ]
    for key in ("one", "two", "one, seed 1"):
        row = fit[key]
        name = {"one": "n_devices=1", "two": "n_devices=2", "one, seed 1": "n_devices=1, random_state=1"}[key]
        lines.append(f"| {name} | {row['wall_s']:.1f} | {row['train_s']:.1f} | "
                     f"{row['train_s'] / fit['one']['train_s']:.2f} | {row['accuracy']:.3f} |")
    lines += [
        "",
        f"Largest difference of predict_proba on {args.test_rows} test rows: n_devices=2 against n_devices=1 "
        f"(same random_state) {fit['two_processes_difference']:.3f}; random_state=1 against 0 in one process "
        f"{fit['seed_difference']:.3f}. MiniLM keeps its dropout (0.1), and each rank draws its own masks, "
        "so two processes match one only as two seeds match each other.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=640)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--test-rows", type=int, default=400)
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when present), 'cpu' or 'cuda'")
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--output", default=None, help="markdown report (default: benchmarks/results/scaling-<device>.md)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    X, y = demo_rows(args.rows)
    search = time_search(X, y, args) if not args.skip_search else None
    two_devices = device.type == "cpu" or torch.cuda.device_count() >= 2
    fit = time_fit(X, y, args) if two_devices else None
    if search is None:
        search = {"sequential_s": float("nan"), "dask_s": float("nan"), "cores": len(os.sched_getaffinity(0)),
                  "loads": [], "threads": [], "score_difference": float("nan")}
    text = report(search, fit, args, device)
    print(text)
    output = Path(args.output) if args.output else HERE / "results" / f"scaling-{device.type}.md"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)


if __name__ == "__main__":
    main()
