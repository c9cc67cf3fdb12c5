#!/usr/bin/env python
"""Peak memory of ``predict_proba`` over many short texts: tokenized in chunks, against all at once.

A PolyClassifier on all-MiniLM-L6-v2 is fitted once on the bundled demo tasks (1 epoch,
pickled to a temporary file). Each mode then runs in a fresh Python process, which
loads the pickle, builds ``rows`` short texts (the first 8 words of demo texts, with
their tasks) and predicts them, while a thread samples the resident set size
(``VmRSS``) every 20 ms:

* ``chunked``: ``predict_proba(X)`` as it is: token ids for 8,192 rows at a time.
* ``all-at-once``: the peer, what ``predict_proba`` did before: tokenize every row
  first, then predict (``_predict_proba_encoded(_encode(all rows))``).

The table gives the RSS before predicting, the peak while predicting, the growth, and
the throughput; the last line the ratio of the two modes' growth at the largest size.

Usage::

    python benchmarks/soak.py                          # 20,000 and 200,000 rows
    python benchmarks/soak.py --rows 2000 --quick      # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time

MODES = ("chunked", "all-at-once")


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


class PeakSampler(threading.Thread):
    """Samples this process's RSS until stopped; ``peak`` is the highest sample (MiB)."""

    def __init__(self, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.interval, self.peak, self._stop_event = interval, rss_mib(), threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, rss_mib())
            time.sleep(self.interval)

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        self.peak = max(self.peak, rss_mib())
        return self.peak


def short_rows(n_rows: int):
    """``n_rows`` short ``(text, task)`` pairs drawn from the demo tasks' test split."""
    import numpy as np

    from skillfit.datasets import load_demo_tasks

    frame = load_demo_tasks(split="test").frame
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(frame), size=n_rows)
    texts = [" ".join(frame["text"].iloc[i].split()[:8]) for i in picks]
    tasks = frame["task"].to_numpy()[picks]
    return list(zip(texts, tasks.tolist()))


def run_mode(mode: str, model_path: str, n_rows: int) -> dict:
    import gc

    import torch

    torch.set_num_threads(int(os.environ.get("SOAK_THREADS", torch.get_num_threads())))
    with open(model_path, "rb") as handle:
        estimator = pickle.load(handle)
    X = short_rows(n_rows)
    estimator.predict_proba(X[:64])  # warm-up: kernels, allocator pools
    gc.collect()
    before = rss_mib()
    sampler = PeakSampler()
    sampler.start()
    start = time.perf_counter()
    if mode == "chunked":
        probabilities = estimator.predict_proba(X)
    else:
        texts, tasks = estimator._validated_inputs(X)
        encoded = estimator._encode(texts, estimator._task_indices(tasks), None)
        probabilities = estimator._predict_proba_encoded(encoded)
    elapsed = time.perf_counter() - start
    peak = sampler.stop()
    return {"mode": mode, "rows": n_rows, "before_mib": before, "peak_mib": peak, "seconds": elapsed,
            "checksum": float(probabilities.sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--mode", choices=MODES, help="run one mode in this process (internal)")
    parser.add_argument("--model", help="pickled estimator (internal)")
    parser.add_argument("--quick", action="store_true", help="fit on 96 rows only")
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.model, args.rows[0])))
        return
    from skillfit import PolyClassifier
    from skillfit.datasets import load_demo_tasks

    data = load_demo_tasks(split="train").frame.sample(n=96 if args.quick else 480, random_state=0)
    estimator = PolyClassifier(max_epochs=1, batch_size=32, max_length=64, random_state=0, device="cpu")
    estimator.fit(data[["text", "task"]], data["label"].to_numpy())
    results = []
    with tempfile.TemporaryDirectory() as folder:
        model_path = os.path.join(folder, "model.pkl")
        with open(model_path, "wb") as handle:
            pickle.dump(estimator, handle)
        for n_rows in args.rows:
            for mode in MODES:
                out = subprocess.run([sys.executable, __file__, "--mode", mode, "--model", model_path, "--rows", str(n_rows)],
                                     check=True, capture_output=True, text=True).stdout
                results.append(json.loads(out.strip().splitlines()[-1]))
                print(f"# {results[-1]}", flush=True)
    print(f"\npredict_proba of PolyClassifier on all-MiniLM-L6-v2 over short texts (8 words), {os.cpu_count()} CPU cores\n")
    print("| rows | mode | RSS before (MiB) | peak while predicting (MiB) | growth (MiB) | texts/s |")
    print("|---:|---|---:|---:|---:|---:|")
    for result in results:
        growth = result["peak_mib"] - result["before_mib"]
        print(f"| {result['rows']:,} | {result['mode']} | {result['before_mib']:.0f} | {result['peak_mib']:.0f} | "
              f"{growth:+.0f} | {result['rows'] / result['seconds']:.0f} |")
    largest = max(args.rows)
    growth = {r["mode"]: r["peak_mib"] - r["before_mib"] for r in results if r["rows"] == largest}
    speed = {r["mode"]: r["rows"] / r["seconds"] for r in results if r["rows"] == largest}
    sums = {r["mode"]: r["checksum"] for r in results if r["rows"] == largest}
    print(f"\nat {largest:,} rows: growth chunked / all-at-once = {growth['chunked'] / growth['all-at-once']:.2f}, "
          f"throughput chunked / all-at-once = {speed['chunked'] / speed['all-at-once']:.2f}, "
          f"same probabilities (sum): {abs(sums['chunked'] - sums['all-at-once']) < 1e-3 * largest}")


if __name__ == "__main__":
    main()
