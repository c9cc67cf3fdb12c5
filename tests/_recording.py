"""A scorer that also records, in the worker that ran the fit, what the scaling tests check."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from skillfit.backbones import backbone_cache_info


def resident_bytes() -> int:
    """This process's resident memory now (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RecordingScorer:
    """Accuracy, plus one JSON line per call in ``folder``: pid, backbone loads, memory, threads."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def __call__(self, estimator, X, y) -> float:
        info = backbone_cache_info()
        record = {"pid": os.getpid(), "loads": info.misses, "rss": resident_bytes(),
                  "threads": torch.get_num_threads()}
        with open(Path(self.folder) / f"{os.getpid()}.jsonl", "a") as file:
            file.write(json.dumps(record) + "\n")
        return estimator.score(X, y)
