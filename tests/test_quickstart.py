"""The main job: examples/quickstart.py on the real, offline all-MiniLM-L6-v2."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.real_model]

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.quickstart
def test_quickstart_runs_offline_and_learns():
    # No skip: CI installs the demo extra, and a missing backbone must fail loudly.
    # Full size: SKILLFIT_EXAMPLE_SIZE=small (the docs gallery's setting) must not shrink the main job.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "SKILLFIT_EXAMPLE_SIZE": "full"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True, text=True, env=env, timeout=1500,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    match = re.search(r"mean accuracy over tasks: ([0-9.]+) \(majority baseline ([0-9.]+)\)", result.stdout)
    assert match, result.stdout
    accuracy, majority = map(float, match.groups())
    assert accuracy > 0.8 and accuracy > majority + 0.25, result.stdout
    assert len(re.findall(r"^\[CPolyClassifier\] epoch", result.stdout, re.M)) == 3
    assert "and reloaded: identical predictions on 1302 test texts" in result.stdout
    assert "task similarity of the routing" in result.stdout and "routing: 12 routed layers x 4 shared skills" in result.stdout


REPEAT_SCRIPT = """
import hashlib
from skillfit import CPolyClassifier
from skillfit.datasets import load_demo_tasks
X, y = load_demo_tasks(split="train", return_X_y=True)
X = X.groupby("task").head(40)
clf = CPolyClassifier(max_epochs=2, max_length=48, random_state=0).fit(X, y.loc[X.index])
print(hashlib.sha1(clf.predict_proba(X).tobytes()).hexdigest())
"""


@pytest.mark.quickstart
def test_same_random_state_repeats_exactly_across_processes_on_minilm():
    # Two threads each: without deterministic kernels these runs differ at ~1e-8.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    digests = [
        subprocess.run([sys.executable, "-c", REPEAT_SCRIPT], capture_output=True, text=True, env=env, check=True).stdout
        for _ in range(2)
    ]
    assert digests[0] == digests[1] and len(digests[0].strip()) == 40
