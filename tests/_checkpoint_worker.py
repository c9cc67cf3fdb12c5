"""A fit with checkpoints that kills itself with SIGKILL: ``python _checkpoint_worker.py SPEC.json``.

SPEC holds the estimator's keyword arguments and ``kill_at``: ``["step", n]`` kills the
process before training step ``n``, ``["write", n]`` in the middle of the ``n``-th
checkpoint write (the temporary file is whole, the rename has not happened).
"""

import json
import os
import signal
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))

from conftest import make_multitask  # noqa: E402
from skillfit import PolyClassifier  # noqa: E402
from skillfit.estimators._training import checkpoint as _checkpoint  # noqa: E402
from skillfit.estimators._training import loop as _training  # noqa: E402


def main(spec_path: str) -> None:
    spec = json.loads(open(spec_path).read())
    torch.set_num_threads(spec["threads"])  # as in the test process: the same float reductions
    kind, at = spec["kill_at"]
    if kind == "step":
        original_step = _training.TrainingLoop.step_on_rows

        def step_then_die(self, *args, **kwargs):
            if self.steps_taken + 1 == at:
                os.kill(os.getpid(), signal.SIGKILL)
            return original_step(self, *args, **kwargs)

        _training.TrainingLoop.step_on_rows = step_then_die
    else:
        original_replace, writes = os.replace, []

        def die_before_rename(source, target):
            writes.append(target)
            if len(writes) == at:
                os.kill(os.getpid(), signal.SIGKILL)
            return original_replace(source, target)

        _checkpoint.os.replace = die_before_rename
    X, y = make_multitask(n_per_task=spec.get("n_per_task", 40))
    PolyClassifier(**spec["params"]).fit(X, y)
    print("the fit ended without being killed")


if __name__ == "__main__":
    main(sys.argv[1])
