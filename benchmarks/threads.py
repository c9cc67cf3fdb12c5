#!/usr/bin/env python
"""Stress loop: one fitted estimator served from many threads at once.

For each estimator (classifiers and Seq2Seq on the tiny offline backbones, merged
inference on and off, mixed-task and one-task calls), every call is made once alone,
then all calls again from ``--threads`` threads started together, ``--rounds`` times.
Prints, per estimator and call: calls made, errors raised, results that differ from
the single-threaded ones (exact comparison), and the throughput of the threaded rounds
against the single-threaded pass (a ratio measured in the same run). A last row makes
``fit`` / ``set_params`` calls while other threads predict: each is refused with
``ConcurrentUseError`` or, finding no prediction running, runs and refuses the
predictions that start meanwhile; no served result may change.

Usage::

    python benchmarks/threads.py                     # ~2 min on 2 CPU cores
    python benchmarks/threads.py --threads 16 --rounds 20
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _tiny import tiny_backbone  # noqa: E402
from conftest import make_multitask  # noqa: E402

from skillfit import ConcurrentUseError, CPolyClassifier, CPolySeq2Seq, LoRASeq2Seq, PolyClassifier  # noqa: E402


def calls_of(X, n_calls, seed):
    rng = np.random.default_rng(seed)
    calls = []
    for i in range(n_calls):
        rows = rng.choice(len(X), size=int(rng.integers(1, 24)), replace=False)
        if i % 2:  # one task per call
            task = X[rows[0]][1]
            rows = [j for j in range(len(X)) if X[j][1] == task][: len(rows)]
        calls.append([X[j] for j in rows])
    return calls


def stress(name, call, calls, n_threads, rounds):
    start = time.perf_counter()
    alone = [call(rows) for rows in calls]
    alone_seconds = time.perf_counter() - start
    errors, wrong, made = [], 0, 0
    lock = threading.Lock()
    barrier = threading.Barrier(n_threads)

    def work(first):
        nonlocal wrong, made
        barrier.wait()
        for _ in range(rounds):
            for i in range(first, len(calls), n_threads):
                try:
                    same = np.array_equal(call(calls[i]), alone[i])
                except Exception as error:  # counted, then reported
                    with lock:
                        errors.append(f"{type(error).__name__}: {error}")
                    continue
                with lock:
                    made += 1
                    wrong += not same

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    speed = (len(calls) * rounds / seconds) / (len(calls) / alone_seconds)
    print(f"| {name} | {len(calls) * rounds} | {len(errors)} | {wrong} | {speed:.2f} |", flush=True)
    for message in sorted(set(errors))[:3]:
        print(f"|   error: {message[:150]} | | | | |")
    return len(errors) + wrong


def refusals(est, X, y, calls, n_threads):
    """fit (same data and seed) and set_params (same value) while threads predict.

    Each change either finds a prediction running and raises ConcurrentUseError, or
    finds none and runs (then the predictions started meanwhile are refused). Either
    way no prediction may return a result other than the one made alone.
    """
    alone = [est.predict_proba(rows) for rows in calls]
    stop, lock = threading.Event(), threading.Lock()
    counts = {"refused": 0, "ran": 0, "reads refused": 0, "wrong": 0, "other errors": 0}

    def serve(first):
        while not stop.is_set():
            for i in range(first, len(calls), n_threads):
                try:
                    same = np.array_equal(est.predict_proba(calls[i]), alone[i])
                except ConcurrentUseError:
                    key = "reads refused"
                except Exception:
                    key = "other errors"
                else:
                    key = None if same else "wrong"
                if key:
                    with lock:
                        counts[key] += 1

    threads = [threading.Thread(target=serve, args=(k,)) for k in range(n_threads)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    for attempt in range(20):
        try:
            est.set_params(rank=est.rank) if attempt % 2 else est.fit(X, y)
            counts["ran"] += 1
        except ConcurrentUseError:
            counts["refused"] += 1
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join()
    print(f"| fit / set_params while serving: {counts} | 20 | {counts['other errors']} | {counts['wrong']} | - |")
    return counts["wrong"] + counts["other errors"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=24)
    args = parser.parse_args(argv)
    X, y = make_multitask(40)
    targets = [label.split(":")[1] for label in y]
    calls = calls_of(X, args.calls, seed=0)
    common = dict(max_epochs=1, random_state=0, rank=4, max_length=32)
    print(f"{args.threads} threads, {args.rounds} rounds, torch {torch.__version__}, {torch.get_num_threads()} torch threads\n")
    print("| estimator and call | calls | errors | differ from alone | throughput × alone |")
    print("|---|---:|---:|---:|---:|")
    failures = 0
    cpoly = CPolyClassifier(n_shared=2, n_exclusive=1, backbone=tiny_backbone("bert"), **common).fit(X, y)
    for merged in (True, False):
        cpoly.set_params(merged_inference=merged)
        failures += stress(f"C-Poly classifier predict_proba, merged={merged}", cpoly.predict_proba, calls,
                           args.threads, args.rounds)
    poly = PolyClassifier(n_skills=2, backbone=tiny_backbone("bert"), handle_unknown_task="infer", **common).fit(X, y)
    failures += stress("Poly classifier predict_task", lambda rows: poly.predict_task([t for t, _ in rows]), calls,
                       args.threads, args.rounds)
    failures += stress("Poly classifier, tasks inferred", lambda rows: poly.predict_proba([(t, None) for t, _ in rows]),
                       calls, args.threads, args.rounds)
    for kind in ("llama", "t5"):
        s2s = CPolySeq2Seq(n_shared=2, n_exclusive=1, backbone=tiny_backbone(kind), max_new_tokens=4, **common)
        s2s.fit(X, targets)
        for settings in ({}, {"num_beams": 2}, {"answer_choices": "auto"}, {"do_sample": True}):
            s2s.set_params(**{**dict(num_beams=1, answer_choices=None, do_sample=False), **settings})
            failures += stress(f"C-Poly Seq2Seq ({kind}) predict {settings or 'greedy'}", s2s.predict, calls,
                               args.threads, args.rounds)
    shared = LoRASeq2Seq(sharing="shared", backbone=tiny_backbone("llama"), max_new_tokens=4, **common).fit(X, targets)
    failures += stress("LoRA shared Seq2Seq (llama) predict", shared.predict, calls, args.threads, args.rounds)
    failures += refusals(cpoly, X, y, calls, args.threads)
    print(f"\n{'FAILED' if failures else 'passed'}: {failures} errors, wrong results or unrefused changes")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
