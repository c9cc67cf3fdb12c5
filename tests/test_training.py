"""Training UX: validation and early stopping, history and progress, interrupts, memory."""

import gc
import math
import json
import os
import warnings

import numpy as np
import pytest
import torch
import transformers
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from _tiny import tiny_backbone
from conftest import make_multitask
from skillfit import CPolyClassifier, LoRAClassifier, PEMTClassifier, PolyClassifier, PolySeq2Seq
from skillfit.estimators._training.loop import TrainingLoop
from skillfit.estimators._training.validation_split import stratified_split
from test_seq2seq import FAST, keyword_tasks


def noisy_labels(X, seed=0):
    """Labels that are coin flips: a model can only memorise them, so validation loss rises as it does."""
    rng = np.random.default_rng(seed)
    return np.asarray([f"{task}:{'yes' if rng.random() < 0.5 else 'no'}" for _, task in X], dtype=object)


def validation_loss(clf, X, y):
    """Mean negative log-likelihood of y, from predict_proba: the 'loss' validation score, negated."""
    probabilities = clf.predict_proba(X)
    columns = np.searchsorted(clf.classes_, y)
    return -np.mean(np.log(probabilities[np.arange(len(y)), columns]))


# --------------------------------------------------------------------- splitting
def test_stratified_split_keeps_every_strata_proportion():
    keys = np.repeat([0, 1, 2, 3], [50, 30, 15, 5])
    train, validation = stratified_split(keys, 0.2, np.random.default_rng(0))
    assert len(validation) == 20 and len(train) == 80 and not set(train) & set(validation)
    assert [int((keys[validation] == k).sum()) for k in range(4)] == [10, 6, 3, 1]
    again, _ = stratified_split(keys, 0.2, np.random.default_rng(0))
    np.testing.assert_array_equal(again, train)
    other, _ = stratified_split(keys, 0.2, np.random.default_rng(1))
    assert not np.array_equal(other, train)


def test_stratified_split_never_empties_a_stratum_and_says_when_nothing_is_held_out():
    keys = np.asarray([0, 1, 2, 3, 3, 3])  # three strata of one row each: they give none
    train, validation = stratified_split(keys, 0.5, np.random.default_rng(0))
    assert set(keys[train]) == {0, 1, 2, 3} and list(keys[validation]) == [3, 3]
    with pytest.raises(ValueError, match="holds out no validation row.*pass X_val and y_val"):
        stratified_split(np.asarray([0, 1, 2]), 0.1, np.random.default_rng(0))


def test_the_early_stopping_split_is_stratified_by_task_and_label(tiny_kwargs, multitask, monkeypatch):
    X, y = multitask
    seen = {}
    original = TrainingLoop.fit_loop

    def spy(self, encoded, n_epochs, **kwargs):
        seen["train"], seen["validation"] = encoded, kwargs["validation"]
        return original(self, encoded, n_epochs, **kwargs)

    monkeypatch.setattr(TrainingLoop, "fit_loop", spy)
    clf = LoRAClassifier(**tiny_kwargs, early_stopping=True, validation_fraction=0.25).fit(X, y)
    validation = seen["validation"]
    assert len(validation["targets"]) == 60 and len(seen["train"]["input_ids"]) == 180
    pairs = validation["tasks"] * len(clf.classes_) + validation["targets"]
    assert sorted(np.unique(pairs, return_counts=True)[1]) == [10] * 6  # 240 rows: 6 task x label cells of 40


# ------------------------------------------------------------------ early stopping
@pytest.mark.slow
def test_early_stopping_stops_and_restores_the_best_epoch():
    X, _ = make_multitask(60)
    y = noisy_labels(X)
    X_val, _ = make_multitask(30, seed=1)
    y_val = noisy_labels(X_val, seed=1)
    clf = PolyClassifier(
        backbone=tiny_backbone("bert"), max_epochs=20, batch_size=16, random_state=0, rank=8, learning_rate=1e-2,
        target_modules="all-linear", warmup_fraction=0.0, early_stopping=True, n_iter_no_change=3,
    ).fit(X, y, X_val=X_val, y_val=y_val)
    scores = clf.validation_scores_
    best_epoch = int(np.argmax(scores)) + 1
    assert clf.n_iter_ == len(scores) == best_epoch + 3 < 20  # stopped 3 epochs after the best
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]  # it kept memorising ...
    assert scores[-1] < scores[best_epoch - 1]  # ... while validation got worse
    assert clf.best_validation_score_ == scores.max()
    # The weights kept are the best epoch's, not the last one's.
    np.testing.assert_allclose(-validation_loss(clf, X_val, y_val), clf.best_validation_score_, atol=1e-5)


def test_validation_data_without_early_stopping_is_only_recorded(tiny_kwargs, multitask):
    X, y = multitask
    clf = CPolyClassifier(**tiny_kwargs, validation_scoring="score").fit(X[:200], y[:200], X_val=X[200:], y_val=y[200:])
    assert clf.n_iter_ == tiny_kwargs["max_epochs"] == len(clf.validation_scores_)
    assert clf.validation_scores_[-1] == pytest.approx(clf.score(X[200:], y[200:]))
    per_task = clf.validation_task_scores_
    assert set(per_task) == set(clf.tasks_.tolist()) and all(0 <= s <= 1 for s in per_task.values())


def test_seq2seq_early_stopping_on_token_loss():
    X, y = keyword_tasks(48, seed=0)
    est = PolySeq2Seq(n_skills=2, backbone=tiny_backbone("t5"), **{**FAST, "max_epochs": 3}, early_stopping=True,
                      validation_fraction=0.25).fit(X, y)
    assert len(est.validation_scores_) == est.n_iter_ and all(s < 0 for s in est.validation_scores_)
    assert set(est.validation_task_scores_) == {"name", "next"}


@pytest.mark.parametrize("fit_kwargs, message", [
    (dict(X_val=[("a text", "alpha")]), "Pass both X_val and y_val"),
    (dict(X_val=[("a text", "omega")], y_val=["alpha:yes"]), r"X_val has task id\(s\) \['omega'\] that X does not have"),
    (dict(X_val=[("a text", "alpha")], y_val=["alpha:maybe"]), r"y_val has label\(s\) \['alpha:maybe'\] that y does not have"),
])
def test_validation_data_errors(fit_kwargs, message, tiny_kwargs, multitask):
    X, y = multitask
    with pytest.raises(ValueError, match=message):
        LoRAClassifier(**tiny_kwargs).fit(X, y, **fit_kwargs)


def test_early_stopping_parameters_are_validated(tiny_kwargs, multitask):
    X, y = multitask
    for bad in (dict(validation_fraction=1.0), dict(n_iter_no_change=0), dict(tol=-1.0), dict(validation_scoring="f1")):
        with pytest.raises(ValueError, match=list(bad)[0]):
            LoRAClassifier(**tiny_kwargs, **bad).fit(X, y)


# ------------------------------------------------------------------------ history
@pytest.mark.slow
def test_history_holds_plain_floats_per_epoch_and_stage(tiny_kwargs, multitask):
    X, y = multitask
    clf = PEMTClassifier(**tiny_kwargs, early_stopping=True).fit(X, y)
    history = clf.history_
    assert [record["stage"] for record in history] == ["stage 1"] * 2 + ["stage 2"] * 2
    for record in history:
        assert set(record) == {"epoch", "stage", "loss", "validation_score", "time"}
        assert all(type(record[key]) is float for key in ("loss", "validation_score", "time"))
    json.dumps(history)
    assert clf.loss_curve_ == [record["loss"] for record in history]
    n_before = len(history)
    clf.adapt([(text, "delta") for text, _ in X[:20]], ["delta:a", "delta:b"] * 10, max_epochs=1)
    assert len(clf.history_) == n_before + 1 and clf.history_[-1]["stage"] == "adapt:routing"
    assert clf.n_iter_ == n_before  # n_iter_ counts fit's epochs


@pytest.mark.slow
def test_verbose_prints_epochs_and_shows_bars(tiny_kwargs, multitask, capsys):
    X, y = multitask
    LoRAClassifier(**{**tiny_kwargs, "verbose": 1}, early_stopping=True).fit(X, y)
    out = capsys.readouterr().out
    assert "[LoRAClassifier] epoch 1/2  loss" in out and "validation -0." in out
    LoRAClassifier(**{**tiny_kwargs, "verbose": 2}).fit(X, y)
    err = capsys.readouterr().err
    assert "epoch 2/2" in err and "loss=" in err and "100%" in err


@pytest.mark.slow
def test_plot_history(tiny_kwargs, multitask):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from skillfit.plotting import plot_history

    X, y = multitask
    clf = PolyClassifier(**{**tiny_kwargs, "max_epochs": 3}, early_stopping=True).fit(X, y)
    ax = plot_history(clf)
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["training loss", "validation loss", "kept epoch"]
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), -clf.validation_scores_)
    scored = PolyClassifier(**tiny_kwargs, validation_scoring="score").fit(X[:200], y[:200], X_val=X[200:], y_val=y[200:])
    ax = plot_history(scored)
    assert ax.get_lines()[0].get_label() == "training loss" and ax.figure.axes[-1].get_ylabel() == "validation score"
    with pytest.raises(NotFittedError):
        plot_history(PolyClassifier())


# --------------------------------------------------------------------- interrupts
def interrupt_at_step(monkeypatch, step, corrupt=True):
    """Raise KeyboardInterrupt in training step ``step`` (1-based), after half-updating a parameter."""
    calls = {"n": 0}
    original = TrainingLoop.train_step

    def step_then_maybe_interrupt(self, batch, optimizer, scheduler):
        calls["n"] += 1
        if calls["n"] == step:
            if corrupt:  # as if Ctrl-C landed inside optimizer.step()
                with torch.no_grad():
                    optimizer.param_groups[0]["params"][0].add_(1.0)
            raise KeyboardInterrupt
        return original(self, batch, optimizer, scheduler)

    monkeypatch.setattr(TrainingLoop, "train_step", step_then_maybe_interrupt)


def trained_parameters(network):
    return {name: p.detach().clone() for name, p in network.named_parameters() if p.requires_grad}


def test_interrupt_in_the_first_epoch_leaves_a_new_estimator_unfitted(tiny_kwargs, multitask, monkeypatch):
    X, y = multitask
    clf = CPolyClassifier(**tiny_kwargs)
    interrupt_at_step(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        clf.fit(X, y)
    with pytest.raises(NotFittedError):
        clf.predict(X[:2])
    assert set(vars(clf)) == set(CPolyClassifier(**tiny_kwargs).get_params())


@pytest.mark.slow
def test_interrupt_in_the_first_epoch_of_a_refit_keeps_the_previous_model(tiny_kwargs, multitask, monkeypatch):
    X, y = multitask
    clf = CPolyClassifier(**tiny_kwargs).fit(X, y)
    before = clf.predict_proba(X)
    network = clf.network_
    interrupt_at_step(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        clf.set_params(random_state=1).fit(X[:100], y[:100])
    assert clf.network_ is network
    np.testing.assert_array_equal(clf.predict_proba(X), before)


@pytest.mark.slow
def test_interrupt_later_keeps_the_last_complete_epoch(tiny_kwargs, multitask, monkeypatch):
    X, y = multitask
    kwargs = {**tiny_kwargs, "max_epochs": 4}
    snapshots = []
    original = TrainingLoop.run_epoch

    def recording(self, *args):
        loss = original(self, *args)
        snapshots.append(trained_parameters(self.network))
        return loss

    monkeypatch.setattr(TrainingLoop, "run_epoch", recording)
    reference = CPolyClassifier(**kwargs).fit(X, y)
    monkeypatch.setattr(TrainingLoop, "run_epoch", original)
    steps_per_epoch = -(-len(X) // kwargs["batch_size"])
    interrupt_at_step(monkeypatch, 2 * steps_per_epoch + 5)  # inside epoch 3
    with pytest.warns(UserWarning, match="interrupted after 2 epoch.*keeps the weights of epoch 2"):
        clf = CPolyClassifier(**kwargs).fit(X, y)
    assert clf.n_iter_ == 2 and clf.loss_curve_ == reference.loss_curve_[:2]
    for name, value in trained_parameters(clf.network_).items():
        torch.testing.assert_close(value, snapshots[1][name], rtol=0, atol=0)
    assert clf.predict(X[:4]).shape == (4,)


def test_an_interrupt_right_after_an_epoch_line_keeps_that_epoch(tiny_kwargs, multitask, monkeypatch, capsys):
    """The line of epoch 2 is printed once epoch 2 is recorded and kept: Ctrl-C at that moment keeps it."""
    import builtins

    X, y = multitask
    printed = builtins.print

    def interrupt_after_epoch_two(*args, **kwargs):
        printed(*args, **kwargs)
        if args and "epoch 2/4" in str(args[0]):
            raise KeyboardInterrupt

    monkeypatch.setattr(builtins, "print", interrupt_after_epoch_two)
    with pytest.warns(UserWarning, match="interrupted after 2 epoch.*keeps the weights of epoch 2"):
        clf = CPolyClassifier(**{**tiny_kwargs, "max_epochs": 4, "verbose": 1}).fit(X, y)
    assert clf.n_iter_ == 2 and "epoch 2/4" in capsys.readouterr().out


@pytest.mark.slow
def test_interrupt_with_validation_keeps_the_best_epoch_so_far(tiny_kwargs, multitask, monkeypatch):
    X, y = multitask
    kwargs = {**tiny_kwargs, "max_epochs": 4, "early_stopping": True, "n_iter_no_change": 4}
    steps_per_epoch = -(-int(len(X) * 0.9) // kwargs["batch_size"])
    interrupt_at_step(monkeypatch, 3 * steps_per_epoch + 2)
    with pytest.warns(UserWarning, match="interrupted after 3 epoch"):
        clf = PolyClassifier(**kwargs).fit(X, y)
    assert clf.best_validation_score_ == clf.validation_scores_.max()


def test_interrupted_adapt_keeps_the_fitted_tasks(tiny_kwargs, multitask, monkeypatch):
    X, y = multitask
    clf = CPolyClassifier(**tiny_kwargs).fit(X, y)
    before = clf.predict_proba(X)
    interrupt_at_step(monkeypatch, 2)
    with pytest.warns(UserWarning, match="adapt was interrupted.*fitted tasks are unchanged"):
        clf.adapt([(text, "delta") for text, _ in X[:40]], ["delta:a", "delta:b"] * 20, max_epochs=2)
    assert "delta" in clf.tasks_.tolist()
    old_columns = [clf.classes_.tolist().index(label) for label in np.unique(y)]
    np.testing.assert_array_equal(clf.predict_proba(X)[:, old_columns], before)


def test_interrupt_between_pemt_stages_leaves_the_estimator_as_it_was(tiny_kwargs, multitask, monkeypatch):
    """Outside a running loop (PEMT's conversion to gated experts) there are no weights to keep."""
    import skillfit.estimators.pemt as pemt_module

    def interrupted_conversion(*args, **kwargs):
        raise KeyboardInterrupt

    X, y = multitask
    clf = PEMTClassifier(**tiny_kwargs)
    monkeypatch.setattr(pemt_module, "gate_experts", interrupted_conversion)
    with pytest.raises(KeyboardInterrupt):
        clf.fit(X, y)
    assert set(vars(clf)) == set(PEMTClassifier(**tiny_kwargs).get_params())


@pytest.mark.slow
def test_interrupt_warnings_point_at_the_callers_line(tiny_kwargs, multitask, monkeypatch):
    X, y = multitask
    clf = CPolyClassifier(**tiny_kwargs).fit(X, y)
    interrupt_at_step(monkeypatch, 2)
    with pytest.warns(UserWarning, match="adapt was interrupted") as record:
        clf.adapt([(text, "delta") for text, _ in X[:40]], ["delta:a", "delta:b"] * 20, max_epochs=2)
    assert record[0].filename == __file__
    interrupt_at_step(monkeypatch, -(-len(X) // tiny_kwargs["batch_size"]) + 3)  # in epoch 2 of the refit
    with pytest.warns(UserWarning, match="fit was interrupted") as record:
        clf.fit(X, y)
    assert record[0].filename == __file__


# ------------------------------------------------------------------------ memory
def rss_mib() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


@pytest.fixture(scope="module")
def medium_bert(tmp_path_factory):
    """A 13 MB BERT (4 layers of width 256): a leaked copy per fit would show in RSS."""
    path = tmp_path_factory.mktemp("medium-bert")
    source = tiny_backbone("bert")
    config = transformers.BertConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
                                     vocab_size=60, max_position_embeddings=64)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        transformers.AutoModel.from_config(config).save_pretrained(path)
    transformers.AutoTokenizer.from_pretrained(source).save_pretrained(path)
    return str(path)


@pytest.mark.slow
def test_fit_frees_optimizer_state_and_gradients(tiny_kwargs, multitask):
    X, y = multitask
    clf = PolyClassifier(**tiny_kwargs).fit(X, y)
    assert all(p.grad is None for p in clf.network_.parameters())
    gc.collect()
    assert not [o for o in gc.get_objects() if issubclass(type(o), torch.optim.Optimizer)]


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads RSS from /proc")
def test_twenty_fits_of_clones_keep_process_memory_flat(medium_bert, multitask):
    X, y = multitask
    template = PolyClassifier(backbone=medium_bert, max_epochs=1, batch_size=32, random_state=0, max_length=32)
    clone(template).fit(X, y)  # warm-up: libraries, allocator pools, the backbone cache
    gc.collect()
    start = rss_mib()
    sizes = []
    for seed in range(20):  # as GridSearchCV does: clone, fit, score, drop
        estimator = clone(template).set_params(random_state=seed).fit(X, y)
        estimator.score(X[:50], y[:50])
        del estimator
        gc.collect()
        sizes.append(rss_mib())
    backbone_mib = 13.0
    # A leaked backbone, optimizer or network per fit would add >= 13 MB each, 260 MB in all;
    # a leak of a tenth of that per fit would still add 13 MB over the last 10 fits.
    assert sizes[-1] - start < backbone_mib, f"RSS grew from {start:.0f} to {sizes} MiB"
    assert sizes[-1] - sizes[9] < backbone_mib / 2, f"RSS still grows over the last 10 fits: {sizes} MiB"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_memory_returns_to_baseline_after_fits(tiny_kwargs, multitask):
    X, y = multitask
    template = PolyClassifier(**{**tiny_kwargs, "device": "cuda"})
    clone(template).fit(X, y)
    gc.collect()
    baseline = torch.cuda.memory_allocated()
    for _ in range(5):
        estimator = clone(template).fit(X, y)
        del estimator
        gc.collect()
    assert torch.cuda.memory_allocated() == baseline


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_fitted_estimator_unpickles_and_predicts_on_cpu(tiny_kwargs, multitask, monkeypatch):
    import pickle

    X, y = multitask
    clf = PolyClassifier(**{**tiny_kwargs, "device": "cuda"}).fit(X, y)
    expected = clf.predict_proba(X)
    payload = pickle.dumps(clf)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        restored = pickle.loads(payload)
    assert restored.device_.type == "cpu"
    np.testing.assert_allclose(restored.predict_proba(X), expected, atol=2e-2)  # bf16 autocast on the GPU


# ------------------------------------------------------------ per-task optimizer rows
def task_table_and_shared(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Parameter(torch.randn(6, 3, 2)), torch.nn.Parameter(torch.randn(4))


def row_optimizer(table, shared, weight_decay=0.1):
    from skillfit.estimators._training.optimizer import TaskRowAdamW

    return TaskRowAdamW([
        {"params": [shared], "lr": 1e-2, "weight_decay": weight_decay},
        {"params": [table], "lr": 1e-2, "weight_decay": weight_decay, "task_rows": True},
    ])


def loss_on_rows(table, shared, rows, step):
    weights = torch.linspace(-1, 1, 6).view(6, 1, 1) * (step + 1)
    return (table[rows] * weights[rows]).pow(2).sum() + (shared * step).sin().sum()


def test_task_row_adamw_equals_adamw_when_every_task_is_in_every_batch():
    table, shared = task_table_and_shared()
    reference_table, reference_shared = task_table_and_shared()
    optimizer = row_optimizer(table, shared)
    reference = torch.optim.AdamW([reference_shared, reference_table], lr=1e-2, weight_decay=0.1)
    rows = torch.arange(6)
    for step in range(5):
        for opt, params in ((optimizer, (table, shared)), (reference, (reference_table, reference_shared))):
            opt.zero_grad()
            loss_on_rows(*params, rows, step).backward()
        optimizer.set_active_tasks(torch.tensor([5, 0, 3, 1, 4, 2, 2]))
        optimizer.step()
        reference.step()
    torch.testing.assert_close(table, reference_table, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(shared, reference_shared, atol=1e-6, rtol=1e-6)


def test_task_row_adamw_leaves_absent_tasks_bit_identical_and_bias_corrects_per_row():
    table, shared = task_table_and_shared()
    optimizer = row_optimizer(table, shared, weight_decay=0.0)
    start = table.detach().clone()
    for step in range(4):  # tasks 0 and 1 only
        optimizer.zero_grad()
        loss_on_rows(table, shared, torch.tensor([0, 1]), step).backward()
        optimizer.set_active_tasks(torch.tensor([0, 1, 1]))
        optimizer.step()
    assert torch.equal(table[2:], start[2:])  # dense AdamW would also leave them: zero grad, zero moments
    assert not torch.equal(table[:2], start[:2])
    # Task 3 joins at step 5: its first update is Adam's first step, lr * sign(grad), not a damped one.
    optimizer.zero_grad()
    loss_on_rows(table, shared, torch.tensor([0, 3]), 4).backward()
    grad = table.grad[3].clone()
    before = table.detach().clone()
    optimizer.set_active_tasks(torch.tensor([0, 3]))
    optimizer.step()
    torch.testing.assert_close(table[3] - before[3], -1e-2 * grad.sign(), atol=1e-6, rtol=0)
    # Task 1 is absent from this step: unchanged, though dense AdamW would move it by its momentum.
    assert optimizer.state[table]["exp_avg"][1].abs().sum() > 0 and torch.equal(table[1], before[1])
    assert torch.equal(optimizer.state[table]["row_steps"], torch.tensor([5.0, 4.0, 0.0, 1.0, 0.0, 0.0]))


def test_skill_tables_take_row_steps_and_everything_else_dense_steps(tiny_kwargs, multitask):
    X, y = multitask
    clf = CPolyClassifier(**tiny_kwargs, n_exclusive=2).fit(X, y)
    optimizer, _ = clf._training_loop(np.random.default_rng(0)).make_optimizer(10)
    names = {id(param): name for name, param in clf.network_.named_parameters()}
    by_kind = {True: set(), False: set()}
    for group in optimizer.param_groups:
        by_kind[group["task_rows"]] |= {names[id(param)].rsplit(".", 1)[-1] for param in group["params"]}
    assert by_kind[True] == {"exclusive_A", "exclusive_B", "routing_logits", "exclusive_logits"}
    assert "shared_A" in by_kind[False] and not by_kind[True] & by_kind[False]


# ------------------------------------------------------------------------ warm start
@pytest.mark.slow
def test_warm_start_continues_from_the_fitted_weights(tiny_kwargs, multitask):
    X, y = multitask
    clf = PolyClassifier(**{**tiny_kwargs, "max_epochs": 1}).fit(X, y)
    fitted = clf.predict_proba(X)
    # With a vanishing learning rate, a warm fit stays where the first ended; a cold one at the start.
    clf.set_params(warm_start=True, learning_rate=1e-12, router_learning_rate=1e-12)
    clf.fit(X, y)
    np.testing.assert_allclose(clf.predict_proba(X), fitted, atol=1e-6)
    assert clf.n_iter_ == 2 and len(clf.loss_curve_) == 2
    cold = PolyClassifier(**{**tiny_kwargs, "max_epochs": 1, "learning_rate": 1e-12, "router_learning_rate": 1e-12})
    assert np.abs(cold.fit(X, y).predict_proba(X) - fitted).max() > 1e-3


@pytest.mark.slow
def test_warm_start_refuses_what_only_adapt_can_learn(tiny_kwargs, multitask, monkeypatch):
    X, y = multitask
    clf = PolyClassifier(**{**tiny_kwargs, "max_epochs": 1, "warm_start": True}).fit(X, y)
    before = clf.predict_proba(X)
    with pytest.raises(ValueError, match=r"new task\(s\) \['omega'\]; learn them with adapt\(\)"):
        clf.fit(list(X) + [("w1 w2", "omega")], list(y) + ["omega:yes"])
    with pytest.raises(ValueError, match=r"new label\(s\) \['alpha:maybe'\]"):
        clf.fit(X, ["alpha:maybe"] + list(y[1:]))
    other = next(label for label in y if not label.startswith(X[0][1]))
    with pytest.raises(ValueError, match="row 0 gives task .* which it did not have"):
        clf.fit(X, [other] + list(y[1:]))
    original = clf._batch_loss  # a loss that diverges (learning rates are bounded at 1000)
    monkeypatch.setattr(clf, "_batch_loss", lambda batch: original(batch) * float("inf"))
    clf.set_params(max_epochs=3)
    with pytest.raises(FloatingPointError):
        clf.fit(X, y)
    monkeypatch.undo()
    np.testing.assert_array_equal(clf.predict_proba(X), before)  # every refusal and failure left it as it was
    with pytest.raises(ValueError, match="PEMTClassifier cannot continue a fit"):
        PEMTClassifier(**{**tiny_kwargs, "max_epochs": 1, "warm_start": True}).fit(X, y).fit(X, y)


@pytest.mark.parametrize("schedule, expected", [
    # 10 steps, 2 of warm-up (1/3, 2/3), then the shape over the 8 others.
    ("linear", [1 / 3, 2 / 3, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8]),
    ("cosine", [1 / 3, 2 / 3] + [0.5 * (1 + math.cos(math.pi * i / 8)) for i in range(8)]),
    ("constant", [1 / 3, 2 / 3] + [1.0] * 8),
])
def test_each_learning_rate_schedule_has_its_shape(schedule, expected):
    from skillfit.estimators._training.optimizer import learning_rate_schedule

    factor = learning_rate_schedule(schedule, 10, 0.2)
    np.testing.assert_allclose([factor(step) for step in range(10)], expected, rtol=1e-12)


def test_gradient_accumulation_makes_the_step_of_the_whole_batch():
    """One step per epoch either way: all 24 rows in one batch, or in 3 batches of 8 whose gradients add up."""
    X, y = make_multitask(n_per_task=8)
    settings = dict(backbone=tiny_backbone("bert", dropout=False), n_skills=2, max_epochs=2, rank=2, max_length=16,
                    random_state=0, warmup_fraction=0.0)
    whole = PolyClassifier(batch_size=24, **settings).fit(X, y)
    accumulated = PolyClassifier(batch_size=8, gradient_accumulation_steps=3, **settings).fit(X, y)
    np.testing.assert_allclose(accumulated.loss_curve_, whole.loss_curve_, rtol=1e-5)
    np.testing.assert_allclose(accumulated.predict_proba(X), whole.predict_proba(X), atol=1e-5)
    separate = PolyClassifier(batch_size=8, **settings).fit(X, y)  # three steps per epoch: another model
    assert not np.allclose(separate.predict_proba(X), whole.predict_proba(X), atol=1e-5)


def test_the_cosine_schedule_changes_the_model_and_constant_keeps_the_rate():
    from skillfit.callbacks import Callback

    class Rates(Callback):
        def __init__(self):
            self.rates = []

        def on_batch_end(self, state):
            self.rates.append(state.learning_rates["learning_rate"])

    X, y = make_multitask(n_per_task=8)
    runs = {}
    for schedule in ("linear", "cosine", "constant"):
        rates = Rates()
        runs[schedule] = PolyClassifier(backbone=tiny_backbone("bert"), n_skills=2, max_epochs=2, rank=2, max_length=16,
                                        batch_size=8, random_state=0, warmup_fraction=0.0, lr_schedule=schedule,
                                        learning_rate=1e-2, callbacks=[rates]).fit(X, y)
        runs[schedule].rates = rates.rates
    assert runs["constant"].rates == [1e-2] * 6
    assert runs["linear"].rates[-1] == 0.0 and runs["cosine"].rates[-1] == pytest.approx(0.0, abs=1e-12)
    assert runs["cosine"].rates[1] > runs["linear"].rates[1]  # half a cosine stays higher at first
    assert runs["cosine"].loss_curve_ != runs["linear"].loss_curve_
