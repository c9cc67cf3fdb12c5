"""Searches on Dask and Ray (joblib backends): the sequential results, one backbone load per worker,
small payloads, flat worker memory, no oversubscribed cores; and where device="auto" puts a fit."""

import json
import os
import pickle
from collections import defaultdict
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV, cross_validate

from _recording import RecordingScorer
from _tiny import tiny_backbone
from conftest import make_multitask
from skillfit import PolyClassifier
from skillfit import _devices, backbones

pytestmark = [pytest.mark.distributed]

GRID = {"rank": [2, 4], "n_skills": [2, 3]}  # 4 candidates
N_WORKERS = 2
MEMORY_GROWTH_LIMIT = 48 << 20  # bytes a worker may gain from its second fit to its last


@pytest.fixture(scope="module")
def data():
    return make_multitask(n_per_task=24)


def estimator(backbone, **kwargs):
    return PolyClassifier(backbone=backbone, max_epochs=1, batch_size=16, random_state=0, max_length=32,
                          device="cpu", **kwargs)


def worker_records(folder: Path) -> dict[int, list[dict]]:
    records = defaultdict(list)
    for path in folder.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            records[record["pid"]].append(record)
    return records


def check_workers(folder: Path, n_fits: int) -> None:
    """Every worker loaded the backbone once, used its share of the cores, and kept its memory."""
    records = worker_records(folder)
    assert os.getpid() not in records, "a fit ran in the test process, not on a worker"
    assert sum(len(rows) for rows in records.values()) == n_fits
    assert max(len(rows) for rows in records.values()) >= 2, "no worker ran several fits"
    cores = len(os.sched_getaffinity(0))
    for rows in records.values():
        assert [row["loads"] for row in rows] == [1] * len(rows), rows  # one load, for every fit
        assert all(row["threads"] * N_WORKERS <= max(cores, N_WORKERS) for row in rows), rows
        if len(rows) >= 3:
            assert rows[-1]["rss"] - rows[1]["rss"] < MEMORY_GROWTH_LIMIT, [row["rss"] for row in rows]


def run_searches(backend: str, backbone: str, data, tmp_path: Path) -> None:
    """GridSearchCV, RandomizedSearchCV and cross_validate on ``backend``, each against its sequential run."""
    X, y = data
    searches = {
        "grid": lambda scoring, n_jobs: GridSearchCV(
            estimator(backbone), GRID, cv=2, scoring=scoring, n_jobs=n_jobs, refit=False),
        "randomized": lambda scoring, n_jobs: RandomizedSearchCV(
            estimator(backbone), GRID, n_iter=3, cv=2, scoring=scoring, n_jobs=n_jobs, refit=False, random_state=0),
    }
    for name, make in searches.items():
        sequential = make("accuracy", 1).fit(X, y)
        folder = tmp_path / f"{backend}-{name}"
        folder.mkdir()
        with joblib.parallel_config(backend=backend):
            distributed = make(RecordingScorer(str(folder)), N_WORKERS).fit(X, y)
        np.testing.assert_allclose(distributed.cv_results_["mean_test_score"],
                                   sequential.cv_results_["mean_test_score"], atol=1e-6)
        check_workers(folder, n_fits=len(sequential.cv_results_["params"]) * 2)
    folder = tmp_path / f"{backend}-cross-validate"
    folder.mkdir()
    with joblib.parallel_config(backend=backend):
        scores = cross_validate(estimator(backbone), X, y, cv=3, n_jobs=N_WORKERS,
                                scoring=RecordingScorer(str(folder)), return_estimator=True)
    sequential = cross_validate(estimator(backbone), X, y, cv=3, scoring="accuracy")
    np.testing.assert_allclose(scores["test_score"], sequential["test_score"], atol=1e-6)
    # Fitted estimators came back from the workers with their skills only, the backbone by reference.
    embedded = estimator(backbone, embed_backbone=True).fit(X[:8], y[:8])
    frozen_bytes = sum(p.numel() * p.element_size() for p in embedded.network_.parameters() if not p.requires_grad)
    for fitted in scores["estimator"]:
        state = fitted.__getstate__()
        assert "network_" not in state and "_network_payload" in state
        assert len(pickle.dumps(fitted)) + 0.9 * frozen_bytes < len(pickle.dumps(embedded))
        assert fitted.predict(X[:4]).shape == (4,)


def test_searches_on_a_dask_cluster(data, tmp_path):
    distributed = pytest.importorskip("dask.distributed", reason="pip install skillfit[dask]")
    backbone = tiny_backbone("bert")
    with distributed.LocalCluster(n_workers=N_WORKERS, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        run_searches("dask", backbone, data, tmp_path)
        loads = client.run(lambda: backbones.backbone_cache_info().misses)
    assert sorted(loads.values()) == [1] * N_WORKERS


def test_searches_on_ray(data, tmp_path):
    ray = pytest.importorskip("ray", reason="pip install skillfit[ray]")
    from ray.util.joblib import register_ray

    backbone = tiny_backbone("bert")
    tests = os.path.dirname(__file__)
    ray.init(num_cpus=N_WORKERS, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])}})
    try:
        register_ray()
        run_searches("ray", backbone, data, tmp_path)
    finally:
        ray.shutdown()


# ----------------------------------------------------------------- GPU placement
class FakeCuda:
    """The part of torch.cuda that device="auto" reads, for a machine with GPUs of given free memory."""

    def __init__(self, free_gib: list[float], nvml: bool = True) -> None:
        self.free = [int(gib * (1 << 30)) for gib in free_gib]
        self.nvml = nvml
        self.total = 80 << 30

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: len(self.free))
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: type("P", (), {"total_memory": self.total}))
        monkeypatch.setattr(torch.cuda, "device_memory_used", self.used)
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (self.free[i], self.total))

    def used(self, index):
        if not self.nvml:
            raise ModuleNotFoundError("pynvml")
        return self.total - self.free[index]


def test_auto_picks_the_gpu_with_the_most_free_memory(monkeypatch):
    FakeCuda([10, 70, 30]).install(monkeypatch)
    assert backbones.resolve_device("auto") == torch.device("cuda", 1)
    assert backbones.resolve_device("cpu") == torch.device("cpu")


def test_without_nvml_no_gpu_is_probed_and_workers_spread(monkeypatch):
    FakeCuda([10, 70, 30], nvml=False).install(monkeypatch)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: pytest.fail("opened a CUDA context to read memory"))
    chosen = []
    for worker in range(4):
        monkeypatch.setattr(_devices, "_worker_number", lambda worker=worker: worker)
        chosen.append(backbones.resolve_device("auto").index)
    assert chosen == [0, 1, 2, 0]


def test_a_rank_takes_its_local_gpu_without_probing(monkeypatch):
    FakeCuda([10, 70, 30]).install(monkeypatch)
    monkeypatch.setattr(torch.cuda, "device_memory_used", lambda i: pytest.fail("probed memory in a rank"))
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert backbones.resolve_device("auto") == torch.device("cuda", 2)


def test_workers_of_a_pool_spread_over_equally_free_gpus(monkeypatch):
    FakeCuda([79.5, 79.8, 20, 79.9]).install(monkeypatch)
    chosen = []
    for worker in range(1, 7):  # loky / multiprocessing workers are numbered from 1
        monkeypatch.setattr(_devices, "_worker_number", lambda worker=worker: worker - 1)
        chosen.append(backbones.resolve_device("auto").index)
    assert chosen == [0, 1, 3, 0, 1, 3]  # GPU 2 is busy; the idle ones take turns


def test_one_gpu_needs_no_memory_reading(monkeypatch):
    FakeCuda([1]).install(monkeypatch)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: pytest.fail("read memory with one GPU"))
    assert backbones.resolve_device("auto") == torch.device("cuda", 0)
