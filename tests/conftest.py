import os

import numpy as np
import pytest
import torch

from _tiny import FILLER, KEYWORDS, tiny_backbone
from skillfit import backbones
from skillfit.estimators import _base, _model_build
from skillfit.estimators._runtime import available_cores
from skillfit.estimators._training import run_context as _run_context
from skillfit.estimators._persistence import saving as _saving

# Under pytest-xdist (setup.cfg: -n 2), the workers share the cores: torch's default of every core per
# process would run two workers x two threads on two cores, each spinning while the other computes.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    torch.set_num_threads(max(1, available_cores() // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

# Where device="auto" trains in the tests. The reference numbers are float32 CPU numbers,
# so the default is the CPU even on a GPU machine; SKILLFIT_TEST_DEVICE=auto (or cuda)
# runs the whole suite on the GPU. Tests that ask for device="cuda" get it either way.
TEST_DEVICE = os.environ.get("SKILLFIT_TEST_DEVICE", "cpu")


@pytest.fixture(autouse=True)
def _auto_device(monkeypatch):
    if TEST_DEVICE == "auto":
        return
    resolve = backbones.resolve_device

    def resolve_for_tests(device: str):
        return resolve(TEST_DEVICE if device == "auto" else device)

    monkeypatch.setattr(_base, "resolve_device", resolve_for_tests)
    monkeypatch.setattr(_saving, "resolve_device", resolve_for_tests)
    monkeypatch.setattr(_run_context, "resolve_device", resolve_for_tests)
    monkeypatch.setattr(_model_build, "resolve_device", resolve_for_tests)


def make_multitask(n_per_task: int = 80, seed: int = 0, task_ids=("alpha", "beta", "gamma"), own_words: bool = False):
    """Keyword tasks that need different features: task i's label says if KEYWORDS[i] occurs.

    Labels are task-specific strings (e.g. "alpha:yes"), so label spaces differ per task.
    With ``own_words``, task i draws its filler from ten words of its own, so the text
    also tells the task.
    """
    rng = np.random.default_rng(seed)
    X, y = [], []
    for i, task in enumerate(task_ids):
        filler = FILLER[10 * i: 10 * i + 10] if own_words else FILLER
        for j in range(n_per_task):
            words = list(rng.choice(filler, size=6))
            words += list(rng.choice([k for k in KEYWORDS if k != KEYWORDS[i]], size=1))
            positive = j % 2 == 0
            if positive:
                words.insert(int(rng.integers(0, len(words))), KEYWORDS[i])
            X.append((" ".join(words), task))
            y.append(f"{task}:{'yes' if positive else 'no'}")
    order = rng.permutation(len(X))
    return [X[k] for k in order], np.asarray([y[k] for k in order], dtype=object)


@pytest.fixture(scope="session")
def bert_path():
    return tiny_backbone("bert")


@pytest.fixture(scope="session")
def multitask():
    return make_multitask()


@pytest.fixture
def tiny_kwargs(bert_path):
    """Fast, deterministic settings on the tiny BERT."""
    return dict(backbone=bert_path, max_epochs=2, batch_size=16, random_state=0, rank=4, max_length=32)


def pytest_collection_modifyitems(config, items):
    """Tests of several processes, of the docs or of real weights are slow too: ``-m "not slow"`` leaves them out."""
    for item in items:
        if any(item.get_closest_marker(kind) for kind in ("distributed", "docs", "real_model")):
            item.add_marker(pytest.mark.slow)
