"""Data-parallel fits on CPU processes (gloo): the same model as one process, clear failures, torchrun."""

import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from _faults import FailsOnRankOne, InterruptedInSecondEpoch, StopsAtStep
from _tiny import tiny_backbone
from conftest import make_multitask
from skillfit import CPolyClassifier, PEMTClassifier, PEMTSeq2Seq, PolyClassifier, PolySeq2Seq
from skillfit.estimators._training.distributed import check_devices

pytestmark = [pytest.mark.distributed, pytest.mark.skipif(os.cpu_count() < 2, reason="two CPU processes need two cores")]

# Dropout off: the only randomness of training is then the routing noise, which every rank shares.
SETTINGS = dict(max_epochs=2, batch_size=16, random_state=0, rank=4, max_length=32)


@pytest.fixture(scope="module")
def quiet_bert():
    return tiny_backbone("bert", dropout=False)


@pytest.fixture(scope="module")
def data():
    return make_multitask(n_per_task=30)


def fit_both(make, X, y, **fit_kwargs):
    one = make(n_devices=1).fit(X, y, **fit_kwargs)
    two = make(n_devices=2).fit(X, y, **fit_kwargs)
    return one, two


@pytest.mark.parametrize("make_estimator", [
    pytest.param(lambda **kw: PolyClassifier(n_skills=3, **kw), id="poly"),
    pytest.param(lambda **kw: CPolyClassifier(n_shared=2, n_exclusive=1, **kw), id="cpoly"),
    pytest.param(lambda **kw: PEMTClassifier(**kw), id="pemt-both-stages"),
])
def test_two_processes_give_the_model_of_one(make_estimator, quiet_bert, data):
    X, y = data
    one, two = fit_both(lambda **kw: make_estimator(backbone=quiet_bert, **SETTINGS, **kw), X, y)
    assert (one.n_devices_, two.n_devices_) == (1, 2)
    np.testing.assert_allclose(two.predict_proba(X), one.predict_proba(X), atol=1e-4)
    np.testing.assert_allclose(two.loss_curve_, one.loss_curve_, rtol=1e-4)
    assert [r.get("stage") for r in two.history_] == [r.get("stage") for r in one.history_]
    assert str(two.device_) == "cpu"
    restored = pickle.loads(pickle.dumps(two))  # complete and usable here, on its own
    np.testing.assert_array_equal(restored.predict(X[:10]), two.predict(X[:10]))


@pytest.mark.parametrize("make_estimator", [
    pytest.param(lambda **kw: PolySeq2Seq(n_skills=2, **kw), id="poly"),
    pytest.param(lambda **kw: PEMTSeq2Seq(**kw), id="pemt-token-weighted-regulariser"),
])
def test_two_processes_generate_what_one_generates(make_estimator):
    from test_seq2seq import keyword_tasks

    X, y = keyword_tasks(40, seed=0)
    settings = dict(backbone=tiny_backbone("t5", dropout=False), max_epochs=2, batch_size=8,
                    random_state=0, rank=2, max_new_tokens=3, learning_rate=1e-2)
    one, two = fit_both(lambda **kw: make_estimator(**settings, **kw), X, y)
    np.testing.assert_allclose(two.loss_curve_, one.loss_curve_, rtol=1e-4)
    np.testing.assert_array_equal(two.predict(X), one.predict(X))


def test_early_stopping_validation_and_adapt_behave_as_in_one_process(quiet_bert, data):
    X, y = data
    make = lambda **kw: PolyClassifier(n_skills=3, backbone=quiet_bert, early_stopping=True,  # noqa: E731
                                       n_iter_no_change=1, **{**SETTINGS, "max_epochs": 4}, **kw)
    one, two = fit_both(make, X, y)
    assert two.n_iter_ == one.n_iter_
    np.testing.assert_allclose(two.validation_scores_, one.validation_scores_, rtol=1e-4)
    assert two.best_validation_score_ == pytest.approx(one.best_validation_score_, rel=1e-4)
    X_new, y_new = make_multitask(n_per_task=10, seed=3, task_ids=("delta",))
    one.adapt(X_new, y_new)
    two.adapt(X_new, y_new)
    assert list(two.tasks_) == list(one.tasks_)
    np.testing.assert_allclose(two.predict_proba(X_new), one.predict_proba(X_new), atol=1e-4)


def test_gradient_accumulation_across_processes_gives_the_model_of_one(quiet_bert, data):
    X, y = data
    make = lambda **kw: CPolyClassifier(n_shared=2, backbone=quiet_bert, gradient_accumulation_steps=3,  # noqa: E731
                                        lr_schedule="cosine", **{**SETTINGS, "batch_size": 8}, **kw)
    one, two = fit_both(make, X, y)
    np.testing.assert_allclose(two.loss_curve_, one.loss_curve_, rtol=1e-4)
    np.testing.assert_allclose(two.predict_proba(X), one.predict_proba(X), atol=1e-4)


def test_a_callback_on_rank_zero_stops_every_rank_where_one_process_stops(quiet_bert, data):
    X, y = data
    make = lambda **kw: PolyClassifier(n_skills=3, backbone=quiet_bert, callbacks=[StopsAtStep(3)],  # noqa: E731
                                       **{**SETTINGS, "max_epochs": 4}, **kw)
    one, two = fit_both(make, X, y)
    steps_per_epoch = -(-len(X) // SETTINGS["batch_size"])
    assert two.n_iter_ == one.n_iter_ == -(-3 // steps_per_epoch) < 4  # the epoch of the third step is the last
    np.testing.assert_allclose(two.loss_curve_, one.loss_curve_, rtol=1e-4)
    np.testing.assert_allclose(two.predict_proba(X), one.predict_proba(X), atol=1e-4)


def test_a_failure_in_one_rank_ends_every_rank_and_reaches_the_caller(quiet_bert, data):
    X, y = data
    est = FailsOnRankOne(n_skills=2, backbone=quiet_bert, n_devices=2, **SETTINGS)
    start = time.monotonic()
    with pytest.raises(ValueError, match="injected failure in rank 1") as error:
        est.fit(X, y)
    assert time.monotonic() - start < 120  # no rank waited for the one that failed
    assert any("rank 1" in note for note in getattr(error.value, "__notes__", []))
    assert not hasattr(est, "network_")  # left as it was: unfitted


def test_an_interrupt_keeps_the_last_complete_epoch_as_one_process_does(quiet_bert, data):
    X, y = data
    est = InterruptedInSecondEpoch(n_skills=2, backbone=quiet_bert, n_devices=2, **SETTINGS)
    with pytest.warns(UserWarning, match="interrupted after 1 epoch"):
        est.fit(X, y)
    assert est.n_iter_ == 1 and est.n_devices_ == 2
    assert est.predict(X[:5]).shape == (5,)


@pytest.mark.parametrize("settings, message", [
    (dict(n_devices=64), "n_devices=64 CPU processes on"),
    (dict(n_devices=2, distributed_backend="nccl"), "distributed_backend='nccl' needs CUDA"),
])
def test_bad_setups_get_clear_errors(settings, message, quiet_bert, data):
    X, y = data
    with pytest.raises(ValueError, match=message):
        PolyClassifier(backbone=quiet_bert, device="cpu", **settings).fit(X, y)


def test_more_processes_than_gpus_are_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match="n_devices=4 asks for 4 GPUs, but 2 are visible"):
        check_devices(4, torch.device("cuda"))
    check_devices(2, torch.device("cuda"))


def test_a_port_in_use_is_named(quiet_bert, data, monkeypatch):
    X, y = data
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        monkeypatch.setenv("MASTER_PORT", str(busy.getsockname()[1]))
        with pytest.raises(ValueError, match=f"MASTER_PORT={busy.getsockname()[1]} is already in use"):
            PolyClassifier(backbone=quiet_bert, n_devices=2, **SETTINGS).fit(X, y)


TORCHRUN_SCRIPT = """
import sys
import numpy as np
import torch.distributed as dist
sys.path.insert(0, {tests!r})
from conftest import make_multitask
from skillfit import CPolyClassifier

if {initialise!r}:  # as accelerate's Accelerator() does before the user's code runs
    dist.init_process_group("gloo")
X, y = make_multitask(n_per_task=30)
est = CPolyClassifier(n_shared=2, backbone={backbone!r}, max_epochs=2, batch_size=16, random_state=0,
                      rank=4, max_length=32, verbose=1, n_devices=1)
est.fit(X, y)
proba = est.predict_proba(X)
every = [None] * dist.get_world_size()
dist.all_gather_object(every, proba)
assert all(np.array_equal(p, every[0]) for p in every), "ranks disagree"
assert est.n_devices_ == dist.get_world_size() == 2
est.save_pretrained({folder!r})
est.save_pretrained({folder!r} + f"-from-rank-{{dist.get_rank()}}")  # only rank 0 writes
np.save({folder!r} + f"-proba-{{dist.get_rank()}}.npy", proba)
if {initialise!r}:  # who starts a group ends it
    dist.destroy_process_group()
"""


@pytest.mark.parametrize("initialise", [False, True], ids=["environment", "initialised-group"])
def test_torchrun_joins_its_group_and_rank_zero_writes(initialise, quiet_bert, tmp_path):
    """fit finds WORLD_SIZE in the environment, or a group the script initialised itself."""
    folder = tmp_path / "model"
    script = tmp_path / "fit.py"
    tests = os.path.dirname(__file__)
    script.write_text(textwrap.dedent(
        TORCHRUN_SCRIPT.format(tests=tests, backbone=quiet_bert, folder=str(folder), initialise=initialise)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # --standalone: a rendezvous on a free local port (what --nnodes 1 needs on a shared machine)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
               "--nproc_per_node", "2", str(script)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("[CPolyClassifier] epoch 1/2") == 1, done.stdout + done.stderr  # only rank 0 prints
    assert (tmp_path / "model-from-rank-0").is_dir() and not (tmp_path / "model-from-rank-1").exists()
    loaded = CPolyClassifier.from_pretrained(folder)
    X, _ = make_multitask(n_per_task=30)
    np.testing.assert_allclose(loaded.predict_proba(X), np.load(f"{folder}-proba-0.npy"), atol=1e-6)
    np.testing.assert_array_equal(np.load(f"{folder}-proba-1.npy"), np.load(f"{folder}-proba-0.npy"))


ACCELERATE_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import numpy as np
import torch.distributed as dist
from accelerate import PartialState

state = PartialState(cpu=True)  # under `accelerate launch --cpu`: the gloo group of the MPI processes
from conftest import make_multitask
from skillfit import PolyClassifier

X, y = make_multitask(n_per_task=30)
est = PolyClassifier(n_skills=2, backbone={backbone!r}, max_epochs=2, batch_size=16, random_state=0, rank=4,
                     max_length=32, device="cpu").fit(X, y)
assert est.n_devices_ == dist.get_world_size() == 2
if state.is_main_process:
    np.save({out!r}, est.predict_proba(X))
"""


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="accelerate launches CPU processes through mpirun")
def test_accelerate_launch_on_cpu_processes_gives_the_model_of_one(quiet_bert, data, tmp_path):
    pytest.importorskip("accelerate")
    script, out = tmp_path / "fit.py", tmp_path / "proba.npy"
    script.write_text(textwrap.dedent(ACCELERATE_SCRIPT.format(tests=os.path.dirname(__file__), backbone=quiet_bert,
                                                               out=str(out))))
    (tmp_path / "hosts").write_text("localhost slots=2\n")
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
               "--mpirun_hostfile", str(tmp_path / "hosts"), "--mixed_precision", "no", "--dynamo_backend", "no",
               str(script)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    X, y = data
    one = PolyClassifier(n_skills=2, backbone=quiet_bert, **{**SETTINGS, "max_epochs": 2}, device="cpu").fit(X, y)
    np.testing.assert_allclose(np.load(out), one.predict_proba(X), atol=1e-4)


NOTEBOOK_LIKE_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from conftest import make_multitask
from skillfit import PolyClassifier

X, y = make_multitask(n_per_task=30)
est = PolyClassifier(n_skills=2, backbone={backbone!r}, max_epochs=1, batch_size=16, rank=4, max_length=32,
                     random_state=None, n_devices=2).fit(X, y)
print("fitted", est.n_devices_, est.predict(X[:3]).shape)
"""


def test_launches_from_code_that_is_no_file(quiet_bert):
    """Like a notebook cell (here stdin), with random_state=None: rank 0's seed is every rank's."""
    code = NOTEBOOK_LIKE_SCRIPT.format(tests=os.path.dirname(__file__), backbone=quiet_bert)
    done = subprocess.run([sys.executable, "-"], input=code, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "fitted 2 (3,)" in done.stdout


INTERRUPTED_SCRIPT = """
import signal, sys, warnings
# A caller started in the background by a non-interactive shell inherits SIGINT ignored; a notebook
# kernel, which this stands for, handles it.
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, {tests!r})
from conftest import make_multitask
from skillfit import PolyClassifier

X, y = make_multitask(n_per_task=30)
est = PolyClassifier(n_skills=2, backbone={backbone!r}, max_epochs=500, batch_size=16, rank=4, max_length=32,
                     random_state=0, verbose=1, n_devices=2)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    est.fit(X, y)
print("RESULT", est.n_iter_, est.n_devices_, any("interrupted" in str(w.message) for w in caught), flush=True)
"""


def test_ctrl_c_in_the_caller_reaches_the_ranks_and_keeps_their_weights(quiet_bert):
    """As Jupyter's interrupt does: SIGINT to the caller only, which passes it on."""
    code = INTERRUPTED_SCRIPT.format(tests=os.path.dirname(__file__), backbone=quiet_bert)
    process = subprocess.Popen([sys.executable, "-u", "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)  # a terminal's Ctrl-C would reach the ranks too
    try:
        for line in process.stdout:
            if "epoch 2/500" in line:
                os.kill(process.pid, signal.SIGINT)
                break
        out, err = process.communicate(timeout=180)
    finally:
        process.kill()
    result = [line.split() for line in out.splitlines() if line.startswith("RESULT")]
    assert result, err
    _, n_iter, n_devices, warned = result[0]
    assert 2 <= int(n_iter) < 500 and n_devices == "2" and warned == "True"
