#!/usr/bin/env python
"""What checkpoints cost: fit time with ``checkpoint_dir`` against without, and the file's size.

A CPolyClassifier (4 shared + 1 exclusive skills, rank 8) on all-MiniLM-L6-v2 is fitted
on the bundled demo tasks three ways, alternated over ``--repeats`` rounds in one
process: without checkpoints (the peer), with a checkpoint at every epoch end, and with
one every 5 steps as well. The table gives the median fit time and its ratio to the
peer, then the size of a checkpoint while training (with the optimizer's moments) and
once finished, next to ``save_pretrained``'s weights file.

Usage::

    python benchmarks/checkpoints.py              # 480 texts, 2 epochs, 3 rounds
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=480)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from skillfit import CPolyClassifier
    from skillfit.datasets import load_demo_tasks
    from skillfit.estimators._training import loop as _training

    data = load_demo_tasks(split="train").frame.sample(n=args.rows, random_state=0)
    X, y = data[["text", "task"]], data["label"].to_numpy()
    settings = dict(n_shared=4, n_exclusive=1, max_epochs=args.epochs, batch_size=32, max_length=64,
                    random_state=0, device="cpu")
    CPolyClassifier(**{**settings, "max_epochs": 1}).fit(X, y)  # warm-up: backbone cache, kernels
    modes = {"no checkpoints": {}, "every epoch": {"checkpoint_every": None}, "every 5 steps": {"checkpoint_every": 5}}
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            for mode, extra in modes.items():
                kwargs = dict(settings, **extra)
                if mode != "no checkpoints":
                    kwargs["checkpoint_dir"] = str(Path(folder) / f"{mode}-{repeat}")
                start = time.perf_counter()
                clf = CPolyClassifier(**kwargs).fit(X, y)
                times[mode].append(time.perf_counter() - start)
                if mode != "no checkpoints" and repeat == 0:
                    (path,) = Path(kwargs["checkpoint_dir"]).iterdir()
                    sizes[f"{mode}, finished"] = path.stat().st_size
        clf.save_pretrained(Path(folder) / "saved")
        sizes["save_pretrained weights"] = (Path(folder) / "saved" / "skillfit_model.safetensors").stat().st_size
        # A running checkpoint (with AdamW's moments): a fit of one more epoch, stopped as that epoch begins.
        running = CPolyClassifier(**{**settings, "max_epochs": args.epochs + 1, "checkpoint_dir": str(Path(folder) / "running")})
        stop = args.epochs * -(-len(X) // 32) + 1

        def preempted(loop, *a, original=_training.TrainingLoop.step_on_rows, **k):
            if loop.steps_taken + 1 == stop:
                raise RuntimeError("preempted")
            return original(loop, *a, **k)

        _training.TrainingLoop.step_on_rows = preempted
        try:
            running.fit(X, y)
        except RuntimeError:
            pass
        (path,) = Path(folder, "running").iterdir()
        sizes["while training (optimizer state)"] = path.stat().st_size
    peer = statistics.median(times["no checkpoints"])
    print(f"CPolyClassifier 4+1 on all-MiniLM-L6-v2, {args.rows} texts, {args.epochs} epochs, "
          f"median of {args.repeats} fits\n")
    print("| checkpoints | median fit (s) | / no checkpoints |")
    print("|---|---:|---:|")
    for mode, values in times.items():
        print(f"| {mode} | {statistics.median(values):.2f} | {statistics.median(values) / peer:.3f} |")
    print("\n| file | size (MB) |")
    print("|---|---:|")
    for name, size in sizes.items():
        print(f"| {name} | {size / 1e6:.2f} |")


if __name__ == "__main__":
    main()
