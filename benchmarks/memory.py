#!/usr/bin/env python
"""Process memory over repeated fits of cloned estimators, as GridSearchCV runs them.

Each mode runs in a fresh Python process: one warm-up fit, then ``--rounds`` (5) rounds of
``clone(template).set_params(random_state=i).fit(X, y)``, ``score``, ``del``. The
table shows the resident set size (RSS, from ``/proc/self/status``) after each round
and each fit's time.

* ``cache``: the default; the frozen MiniLM is read from disk once and its weights
  are shared by every fit (``skillfit.backbones`` cache).
* ``no-cache``: ``set_backbone_cache_size(0)``; every fit loads MiniLM from disk.
* ``kept``: the cache, and every fitted estimator is kept alive (what a user who
  stores all the models pays): the skills, heads and tokenizers, not the backbone.
* ``kept-no-cache``: every estimator kept, each with its own copy of the backbone.

Usage::

    python benchmarks/memory.py            # all modes, MiniLM on the demo tasks
    python benchmarks/memory.py --rounds 20 --modes cache    # 20 fits of clones, as a long search
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time

ROUNDS = 5
MODES = ("cache", "no-cache", "kept", "kept-no-cache")


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def run_mode(mode: str, n_rows: int, rounds: int = ROUNDS) -> dict:
    from sklearn.base import clone

    from skillfit import PolyClassifier
    from skillfit.backbones import set_backbone_cache_size
    from skillfit.datasets import load_demo_tasks

    if mode.endswith("no-cache"):
        set_backbone_cache_size(0)
    data = load_demo_tasks(split="train").frame.sample(n=n_rows, random_state=0)
    X, y = data[["text", "task"]], data["label"].to_numpy()
    template = PolyClassifier(max_epochs=1, batch_size=32, max_length=64, random_state=0, device="cpu")
    start = time.perf_counter()
    clone(template).fit(X, y)
    warm_up = time.perf_counter() - start
    gc.collect()
    rows = [{"round": "warm-up", "rss_mib": rss_mib(), "fit_s": warm_up}]
    kept = []
    for seed in range(rounds):
        start = time.perf_counter()
        estimator = clone(template).set_params(random_state=seed).fit(X, y)
        elapsed = time.perf_counter() - start
        estimator.score(X[:100], y[:100])
        if mode.startswith("kept"):
            kept.append(estimator)
        del estimator
        gc.collect()
        rows.append({"round": seed + 1, "rss_mib": rss_mib(), "fit_s": elapsed})
    return {"mode": mode, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=240, help="training rows per fit")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="fits of clones after the warm-up")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="modes to run")
    parser.add_argument("--mode", choices=MODES, help="run one mode in this process (internal)")
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.rows, args.rounds)))
        return
    results = []
    for mode in args.modes:
        out = subprocess.run([sys.executable, __file__, "--mode", mode, "--rows", str(args.rows), "--rounds", str(args.rounds)],
                             check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    print(f"PolyClassifier on all-MiniLM-L6-v2, {args.rows} rows, 1 epoch per fit, {args.rounds} fits of clones\n")
    print(f"| mode | warm-up RSS (MiB) | RSS after each fit (MiB) | growth over {args.rounds} fits (MiB) | "
          "growth over the last half (MiB) | median fit (s) |")
    print("|---|---:|---|---:|---:|---:|")
    for result in results:
        rows = result["rows"]
        after = [row["rss_mib"] for row in rows[1:]]
        fits = sorted(row["fit_s"] for row in rows[1:])
        print(f"| {result['mode']} | {rows[0]['rss_mib']:.0f} | {', '.join(f'{v:.0f}' for v in after)} | "
              f"{after[-1] - rows[0]['rss_mib']:+.1f} | {after[-1] - after[len(after) // 2 - 1]:+.1f} | "
              f"{fits[len(fits) // 2]:.2f} |")


if __name__ == "__main__":
    main()
