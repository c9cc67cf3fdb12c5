"""MTLoRA, PEMT, few-shot adaptation to new tasks, unknown tasks, routing introspection."""

import pickle

import numpy as np
import pytest
import torch
from transformers import AutoModel

from _tiny import FILLER, KEYWORDS
from conftest import make_multitask
from skillfit import CPolyClassifier, LoRAClassifier, MTLoRAClassifier, PEMTClassifier, PolyClassifier
from skillfit.skills import (
    SkillConfig,
    gate_experts,
    inject_skills,
    skill_layers,
    target_layer_names,
    task_sparsity_loss,
    top_block_layers,
)

ADAPTABLE = [
    pytest.param(lambda **kw: PolyClassifier(n_skills=3, **kw), id="poly"),
    pytest.param(lambda **kw: PolyClassifier(n_skills=2, n_splits=2, **kw), id="poly-s"),
    pytest.param(lambda **kw: CPolyClassifier(n_shared=2, n_exclusive=2, **kw), id="cpoly"),
    pytest.param(lambda **kw: CPolyClassifier(n_shared=2, n_exclusive=1, combine="output", **kw), id="cpoly-output"),
    pytest.param(lambda **kw: LoRAClassifier(sharing="private", **kw), id="lora-private"),
    pytest.param(lambda **kw: MTLoRAClassifier(n_task_layers=1, **kw), id="mtlora"),
    pytest.param(lambda **kw: PEMTClassifier(**kw), id="pemt"),
]


# ---------------------------------------------------------------------------- MTLoRA
@pytest.mark.slow
def test_mtlora_without_task_layers_is_shared_lora(tiny_kwargs, multitask):
    X, y = multitask
    np.testing.assert_array_equal(
        MTLoRAClassifier(n_task_layers=0, **tiny_kwargs).fit(X, y).predict_proba(X),
        LoRAClassifier(sharing="shared", **tiny_kwargs).fit(X, y).predict_proba(X),
    )


def test_mtlora_puts_task_lora_in_top_blocks_only(tiny_kwargs, multitask):
    X, y = multitask
    clf = MTLoRAClassifier(n_task_layers=1, task_rank=3, **tiny_kwargs).fit(X, y)
    layers = dict(skill_layers(clf.network_))
    with_task = sorted(name for name, layer in layers.items() if layer.exclusive_A is not None)
    assert with_task == ["backbone.encoder.layer.1.attention.self.query", "backbone.encoder.layer.1.attention.self.value"]
    assert layers[with_task[0]].exclusive_A.shape == (3, 1, 1, 32, 3)  # T tasks, rank task_rank
    assert all(layer.shared_A.shape[-1] == 4 for layer in layers.values())  # rank everywhere


def test_top_block_layers_per_stack():
    names = ["enc.layer.0.q", "enc.layer.1.q", "enc.layer.2.q", "dec.block.0.q", "dec.block.1.q", "pooler.dense"]
    assert top_block_layers(names, 1) == {"enc.layer.2.q", "dec.block.1.q"}
    assert top_block_layers(names, 2) == {"enc.layer.1.q", "enc.layer.2.q", "dec.block.0.q", "dec.block.1.q"}
    assert top_block_layers(names, 0) == set()


def test_mtlora_task_parts_get_no_gradient_from_other_tasks(bert_path):
    model = AutoModel.from_pretrained(bert_path)
    shared = SkillConfig(n_tasks=3, n_shared=1, routing="none", rank=4)
    top = SkillConfig(n_tasks=3, n_shared=1, n_exclusive=1, exclusive_rank=2, routing="none", combine="output", rank=4)
    top_names = top_block_layers(target_layer_names(model, ["query", "value"]), 1)
    context = inject_skills(model, lambda name: top if name in top_names else shared, ["query", "value"])
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.normal_()
    input_ids = torch.randint(5, 40, (4, 6), generator=torch.Generator().manual_seed(0))
    with context.tasks([0, 2, 0, 2]):
        model(input_ids=input_ids).last_hidden_state.pow(2).sum().backward()
    for name, layer in skill_layers(model):
        assert torch.count_nonzero(layer.shared_A.grad) > 0
        if name in top_names:
            assert torch.count_nonzero(layer.exclusive_A.grad[1]) == 0 and torch.count_nonzero(layer.exclusive_B.grad[1]) == 0
            assert torch.count_nonzero(layer.exclusive_A.grad[0]) > 0


# ------------------------------------------------------------------------------ PEMT
def test_pemt_gate_starts_uniform_and_experts_are_the_stage_one_loras(bert_path):
    model = AutoModel.from_pretrained(bert_path)
    context = inject_skills(model, SkillConfig(n_tasks=3, n_shared=0, n_exclusive=1, routing="none", rank=4), ["query"])
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.normal_()
    stage_one = {name: (layer.exclusive_A.clone(), layer.exclusive_B.clone()) for name, layer in skill_layers(model)}
    context.task_descriptions = torch.randn(3, 32)
    gate_experts(model, description_dim=32)
    for name, layer in skill_layers(model):
        gate = layer.router(torch.tensor([0, 1, 2]), context)
        torch.testing.assert_close(gate, torch.full((3, 1, 3), 1 / 3))
        assert torch.equal(layer.shared_A[0], stage_one[name][0][:, 0, 0])
        assert not layer.shared_A.requires_grad and not layer.shared_B.requires_grad
        # With a uniform gate the update is the average of the experts' updates (plus the zero own adapter).
        x = torch.randn(1, 5, 32)
        with context.tasks([1]), torch.no_grad():
            got = layer(x) - layer.base_layer(x)
        A, B = stage_one[name]
        expected = sum(layer.config.scale * x[0] @ A[t, 0, 0] @ B[t, 0, 0] for t in range(3)) / 3
        torch.testing.assert_close(got[0], expected, atol=1e-5, rtol=1e-4)


def test_task_sparsity_loss_is_zero_for_identical_states_and_grows_with_divergence():
    target = torch.tensor([[1.0, 0.0, 0.0]])
    gates = torch.tensor([[0.5, 0.3, 0.2]])
    same = target.repeat(3, 1)
    assert task_sparsity_loss(gates, target, same).item() == pytest.approx(0.0, abs=1e-7)
    losses = []
    for angle in [0.3, 0.8, 1.5, 3.0]:
        experts = torch.tensor([[np.cos(angle), np.sin(angle), 0.0]] * 3, dtype=torch.float32)
        losses.append(task_sparsity_loss(gates, target, experts).item())
    assert all(a < b for a, b in zip(losses, losses[1:])), losses
    # Mass on the dissimilar expert costs more than on the similar one.
    experts = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    on_similar = task_sparsity_loss(torch.tensor([[0.8, 0.1, 0.1]]), target, experts)
    on_opposite = task_sparsity_loss(torch.tensor([[0.1, 0.1, 0.8]]), target, experts)
    assert on_similar.item() < on_opposite.item()


@pytest.mark.slow
def test_pemt_experts_stay_frozen_in_stage_two(tiny_kwargs, multitask, monkeypatch):
    import skillfit.estimators.pemt as pemt_module

    snapshots = {}
    original = pemt_module.gate_experts

    def recording_gate_experts(model, *args, **kwargs):
        snapshots.update({name: layer.exclusive_A[:, 0, 0].detach().clone() for name, layer in skill_layers(model)})
        return original(model, *args, **kwargs)

    monkeypatch.setattr(pemt_module, "gate_experts", recording_gate_experts)
    X, y = multitask
    clf = PEMTClassifier(task_descriptions={"alpha": "does it mention apple"}, **tiny_kwargs).fit(X, y)
    assert snapshots and clf.n_iter_ == 2 * tiny_kwargs["max_epochs"]
    for name, layer in skill_layers(clf.network_.backbone):
        assert torch.equal(layer.shared_A[0], snapshots[name]), f"expert of {name} changed in stage 2"
    assert clf.gate_weights_.shape == (3, 3)
    np.testing.assert_allclose(clf.gate_weights_.sum(axis=1), 1.0, rtol=1e-5)
    assert np.abs(clf.gate_weights_ - 1 / 3).max() > 1e-4, "stage 2 must move the gates"


# ----------------------------------------------------------------------------- adapt
def _new_task(n=16, seed=2):
    return make_multitask(n_per_task=n, seed=seed, task_ids=("delta",))


@pytest.mark.slow
@pytest.mark.parametrize("make", ADAPTABLE)
@pytest.mark.parametrize("mode", ["routing", "average"])
def test_adapt_changes_only_the_new_tasks_parameters(make, mode, tiny_kwargs, multitask):
    X, y = multitask
    clf = make(**tiny_kwargs).fit(X, y)
    before_proba = clf.predict_proba(X)
    before = {name: tensor.clone() for name, tensor in clf.network_.state_dict().items()}
    n_old = len(clf.tasks_)
    X_new, y_new = _new_task()
    clf.adapt(X_new, y_new, mode=mode, max_epochs=3)
    after = clf.network_.state_dict()
    changed_new_rows = 0
    for name, old in before.items():
        new = after[name]
        if new.shape == old.shape:
            assert torch.equal(new, old), f"{name} changed"
        else:  # grown along the task dimension (dim 0) or along labels (label mask)
            if name.endswith(("label_mask", "head.label_order")):  # label bookkeeping
                continue
            assert new.shape[1:] == old.shape[1:] and new.shape[0] == n_old + 1, name
            assert torch.equal(new[:n_old], old), f"old rows of {name} changed"
            changed_new_rows += 1
    assert changed_new_rows > 0 or mode == "average"
    old_columns = [list(clf.classes_).index(label) for label in sorted(set(y))]
    np.testing.assert_array_equal(clf.predict_proba(X)[:, old_columns], before_proba)
    assert clf.tasks_.tolist()[-1] == "delta" and {"delta:yes", "delta:no"} <= set(clf.classes_)
    assert len(clf.adapt_loss_curve_) == 3
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.predict_proba(X_new), clf.predict_proba(X_new))


@pytest.mark.slow
def test_adapt_all_fine_tunes_everything(tiny_kwargs, multitask):
    X, y = multitask
    clf = PolyClassifier(n_skills=3, **tiny_kwargs).fit(X, y)
    shared_before = dict(skill_layers(clf.network_))["backbone.encoder.layer.0.attention.self.query"].shared_A.clone()
    X_new, y_new = _new_task()
    clf.adapt(X_new + X[:10], np.concatenate([y_new, y[:10]]), mode="all", max_epochs=2)
    shared_after = dict(skill_layers(clf.network_))["backbone.encoder.layer.0.attention.self.query"].shared_A
    assert not torch.equal(shared_before, shared_after)


def test_average_mode_starts_from_the_skills_mean(tiny_kwargs, multitask):
    X, y = multitask
    clf = PolyClassifier(n_skills=3, **tiny_kwargs).fit(X, y)
    layer = dict(skill_layers(clf.network_))["backbone.encoder.layer.0.attention.self.query"]
    layer.add_tasks(1, average=True)
    assert layer.shared_enabled.tolist() == [1.0, 1.0, 1.0, 0.0]
    torch.testing.assert_close(layer.exclusive_A[3, :, 0], layer.shared_A.mean(dim=1))
    assert torch.count_nonzero(layer.exclusive_A[:3]) == 0 and torch.count_nonzero(layer.exclusive_B[:3]) == 0
    layer.eval()
    A, B, _ = layer.task_products(torch.tensor([3]))[0]
    torch.testing.assert_close(A[0], layer.shared_A.mean(dim=1).reshape(32, -1))


def _keyword_task(task, rule, n, seed, p=0.3):
    """Texts with each of six keywords present with probability p; yes/no by ``rule``."""
    rng = np.random.default_rng(seed)
    X, y = [], []
    for _ in range(n):
        present = rng.random(6) < p
        words = list(rng.choice(FILLER, size=5)) + [k for k, on in zip(KEYWORDS[:6], present) if on]
        rng.shuffle(words)
        X.append((" ".join(words), task))
        y.append("yes" if rule(present) else "no")
    return X, np.asarray(y, dtype=object)


@pytest.mark.slow
def test_skills_learned_on_six_tasks_make_a_seventh_learnable_from_32_examples(bert_path):
    # Six tasks, each detecting one keyword; the new task asks for keyword 2 OR keyword 4,
    # a combination of features that two of the learned tasks need.
    X, y = [], []
    for i in range(6):
        X_task, y_task = _keyword_task(f"has_{i}", lambda f, i=i: f[i], 300, seed=i)
        X += X_task
        y = np.concatenate([y, y_task])
    rule = lambda f: f[2] or f[4]  # noqa: E731
    X_few, y_few = _keyword_task("new", rule, 32, seed=100)
    X_test, y_test = _keyword_task("new", rule, 400, seed=101)
    settings = dict(backbone=bert_path, batch_size=32, random_state=0, rank=4, learning_rate=1e-2)
    multitask = CPolyClassifier(n_shared=8, n_exclusive=1, max_epochs=15, **settings).fit(X, y)
    snapshot = pickle.dumps(multitask)
    adapted = {
        mode: pickle.loads(snapshot).adapt(X_few, y_few, mode=mode, max_epochs=30).score(X_test, y_test)
        for mode in ("routing", "average")
    }
    scratch = LoRAClassifier(sharing="shared", max_epochs=30, **settings).fit(X_few, y_few).score(X_test, y_test)
    majority = max(np.mean(y_test == "yes"), np.mean(y_test == "no"))
    # Gains over scratch measured at seeds 0-3: +0.10, +0.17, +0.21, +0.09 (lazy per-task
    # AdamW rows; +0.11, +0.19, +0.20, +0.07 with dense AdamW): 0.08 holds with room at seed 0.
    assert max(adapted.values()) >= scratch + 0.08, (adapted, scratch)
    assert max(adapted.values()) >= majority + 0.3, (adapted, majority)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda clf, X, y: clf.adapt(X, y, mode="partial"), ValueError, "'mode' parameter of PolyClassifier.adapt must be a str among"),
        (lambda clf, X, y: clf.adapt([("w1 apple", "alpha")], ["alpha:yes"]), ValueError, r"rows of fitted task\(s\) \['alpha'\]"),
        (lambda clf, X, y: clf.adapt([("w1 apple", 5)], ["x"]), TypeError, "same type"),
        (lambda clf, X, y: clf.adapt(X, y, max_epochs=0), ValueError, r"'max_epochs' parameter of PolyClassifier.adapt must be an int in the range \[1, inf\) or None"),
    ],
)
def test_adapt_errors(call, error, message, tiny_kwargs, multitask):
    X, y = multitask
    clf = PolyClassifier(n_skills=2, **tiny_kwargs).fit(X, y)
    X_new, y_new = _new_task(4)
    with pytest.raises(error, match=message):
        call(clf, X_new, y_new)


def test_adapt_with_nothing_to_train_says_so(tiny_kwargs, multitask):
    X, y = multitask
    clf = LoRAClassifier(sharing="shared", **tiny_kwargs).fit(X, y)
    with pytest.raises(ValueError, match="nothing to train.*mode='all'"):
        clf.adapt([("w1 apple", "delta"), ("w2", "delta")], ["alpha:yes", "alpha:no"])


def test_adapt_before_fit():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        PolyClassifier().adapt([("a", "t")], ["x"])


# ---------------------------------------------------------------- unknown tasks
@pytest.mark.slow
@pytest.mark.parametrize("make", ADAPTABLE)
def test_unknown_task_with_average_routing(make, tiny_kwargs, multitask):
    X, y = multitask
    clf = make(**tiny_kwargs).fit(X, y)
    with pytest.raises(ValueError, match=r"Unknown task id\(s\) \['omega'\]"):
        clf.predict([("w1 apple", "omega")])
    clf.set_params(handle_unknown_task="average")
    mixed = [("w1 apple", "omega"), ("w2 banana", "beta"), ("w3", "omega")]
    proba = clf.predict_proba(mixed)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert np.all(proba[0] > 0), "an unknown task may predict any label"
    np.testing.assert_allclose(proba[1], clf.predict_proba([mixed[1]])[0], atol=1e-6)  # known rows unaffected
    assert clf.predict(mixed).shape == (3,)


def test_unknown_task_uses_the_average_routing_and_no_exclusive_skills(tiny_kwargs, multitask):
    X, y = multitask
    clf = CPolyClassifier(n_shared=2, n_exclusive=1, handle_unknown_task="average", **tiny_kwargs).fit(X, y)
    layer = dict(skill_layers(clf.network_))["backbone.encoder.layer.0.attention.self.query"]
    layer.eval()
    with layer.context.tasks(torch.tensor([-1, 0])):
        (A, B, _), = layer.task_products(torch.tensor([-1, 0]))
    average = layer.router.eval_weights().mean(dim=0)  # (H, K)
    expected_A = torch.einsum("hk,hkdr->hdr", average, layer.shared_A).reshape(32, -1)
    torch.testing.assert_close(A[0], expected_A)
    (A_known, _, _), = layer.task_products(torch.tensor([0]))
    torch.testing.assert_close(A[1], A_known[0])


# --------------------------------------------------------------- introspection
@pytest.mark.slow
def test_task_similarity_and_routing_per_layer(tiny_kwargs, multitask):
    X, y = multitask
    clf = PolyClassifier(n_skills=4, router_learning_rate=0.2, **{**tiny_kwargs, "max_epochs": 4}).fit(X, y)
    similarity = clf.task_similarity()
    assert list(similarity.index) == list(similarity.columns) == ["alpha", "beta", "gamma"]
    np.testing.assert_allclose(np.diag(similarity.to_numpy()), 1.0, rtol=1e-6)
    np.testing.assert_allclose(similarity.to_numpy(), similarity.to_numpy().T)
    # Centred: three tasks' deviations from their mean sum to zero, so they cannot all agree.
    assert -1.0 <= similarity.to_numpy().min() < 0.0
    layers = clf.layer_routing_weights_
    assert len(layers) == 4 and all(w.shape == (3, 1, 4) for w in layers.values())
    np.testing.assert_array_equal(np.concatenate([w.reshape(3, -1) for w in layers.values()], axis=1), clf.routing_weights_)
    with pytest.raises(ValueError, match="no learned routing"):
        LoRAClassifier(**tiny_kwargs).fit(X, y).task_similarity()


@pytest.mark.slow
def test_plot_routing(tiny_kwargs, multitask):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from skillfit.plotting import plot_routing

    X, y = multitask
    clf = CPolyClassifier(n_shared=3, **tiny_kwargs).fit(X, y)
    ax = plot_routing(clf)
    n_layers = len(clf.layer_routing_weights_)
    assert ax.images[0].get_array().shape == (3, 3 * n_layers)  # every layer's skills, side by side
    assert [label.get_text() for label in ax.get_yticklabels()] == ["alpha", "beta", "gamma"]
    assert len(ax.get_xticklabels()) == n_layers and len(ax.lines) == n_layers - 1  # a name and a line per layer
    layer = next(iter(clf.layer_routing_weights_))
    assert plot_routing(clf, layer=layer).images[0].get_array().shape == (3, 3)
    with pytest.raises(ValueError, match="not a routed layer"):
        plot_routing(clf, layer="nope")


@pytest.mark.slow
@pytest.mark.parametrize("make", [
    lambda kw: PolyClassifier(n_skills=3, n_splits=2, router_learning_rate=0.3, **kw),
    lambda kw: CPolyClassifier(n_shared=2, n_exclusive=1, router_learning_rate=0.3, **kw),
], ids=["poly-s", "cpoly"])
def test_task_similarity_compares_the_updates_routing_builds_from_the_shared_skills(make, tiny_kwargs, multitask):
    """Reference: every task's shared update s * A_t B_t built in full, flattened, centred, cosine."""
    from skillfit.skills import skill_layers

    X, y = multitask
    clf = make({**tiny_kwargs, "max_epochs": 3}).fit(X, y)
    tasks = torch.arange(len(clf.tasks_))
    flat = []
    clf.network_.eval()  # evaluation routing (the relaxed Bernoulli's mean), as task_similarity reads it
    with torch.no_grad():
        for _, layer in skill_layers(clf.network_):
            A, B = layer._as_matrices(*layer._shared_factors(tasks))
            flat.append((layer.config.scale * (A.double() @ B.double())).reshape(len(tasks), -1))
    vectors = torch.cat(flat, dim=1).numpy()
    centred = vectors - vectors.mean(axis=0)
    unit = centred / np.linalg.norm(centred, axis=1, keepdims=True)
    # float32 rounding: both routes mix in float32 (weights here, factors there) before float64
    np.testing.assert_allclose(clf.task_similarity().to_numpy(), unit @ unit.T, atol=1e-7)


@pytest.mark.slow
def test_task_similarity_top_k_lists_each_tasks_nearest_other_tasks(tiny_kwargs, multitask):
    X, y = multitask
    clf = PolyClassifier(n_skills=4, router_learning_rate=0.2, **{**tiny_kwargs, "max_epochs": 3}).fit(X, y)
    full = clf.task_similarity().to_numpy()
    nearest = clf.task_similarity(top_k=1)
    assert list(nearest.columns) == ["task", "rank", "neighbour", "similarity"]
    assert list(nearest["task"]) == ["alpha", "beta", "gamma"] and set(nearest["rank"]) == {1}
    off_diagonal = np.where(np.eye(3, dtype=bool), -np.inf, full)
    assert list(nearest["neighbour"]) == [clf.tasks_[i] for i in off_diagonal.argmax(axis=1)]
    np.testing.assert_allclose(nearest["similarity"], off_diagonal.max(axis=1))
    every = clf.task_similarity(top_k=10)  # more than there are: every other task, most similar first
    assert len(every) == 6 and (every.groupby("task")["similarity"].diff().dropna() <= 0).all()
    with pytest.raises(ValueError, match="top_k.*task_similarity"):
        clf.task_similarity(top_k=0)


def test_routing_plots_with_hundreds_of_tasks_cluster_tasks_and_thin_labels(tiny_kwargs):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from skillfit.plotting import plot_routing, plot_task_similarity

    rng = np.random.default_rng(0)
    tasks = np.repeat([f"task {i:03d}" for i in range(120)], 2)
    X = [(f"w{rng.integers(5)} w{rng.integers(5)}", task) for task in tasks]
    y = np.tile(["no", "yes"], 120)
    clf = PolyClassifier(n_skills=3, router_learning_rate=0.5, **{**tiny_kwargs, "max_epochs": 1, "batch_size": 64}).fit(X, y)
    ax = plot_routing(clf)
    labels = [label.get_text() for label in ax.get_yticklabels()]
    assert ax.images[0].get_array().shape == (120, 3 * len(clf.layer_routing_weights_)) and len(labels) == 40
    assert ax.figure.get_size_inches()[1] <= 12.0
    assert labels != sorted(labels)  # clustered, not in fitted order
    assert [l.get_text() for l in plot_routing(clf, order="fitted").get_yticklabels()][:2] == ["task 000", "task 003"]
    similarity = plot_task_similarity(clf)
    assert similarity.images[0].get_array().shape == (120, 120)
    np.testing.assert_allclose(np.diag(similarity.images[0].get_array()), 1.0, rtol=1e-6)  # rows and columns in one order
    with pytest.raises(ValueError, match="order must be"):
        plot_routing(clf, order="sorted")
    matplotlib.pyplot.close("all")


def test_plot_routing_without_matplotlib_says_how_to_install(monkeypatch, tiny_kwargs, multitask):
    import builtins

    X, y = multitask
    clf = PolyClassifier(n_skills=2, **tiny_kwargs).fit(X, y)
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    from skillfit.plotting import plot_routing

    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot_routing(clf)
