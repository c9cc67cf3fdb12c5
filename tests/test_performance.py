"""Performance paths: per-task mixing, merged inference, length-aware batches, checkpointing, threads.

Timings live in benchmarks/speed.py; these tests check that the fast paths compute the
same numbers as the plain ones.
"""

import os
from contextlib import nullcontext

import joblib
import numpy as np
import pytest
import torch
from transformers import AutoModel

from _tiny import tiny_backbone
from skillfit import CPolyClassifier, LoRAClassifier, MTLoRAClassifier, PEMTClassifier, PolyClassifier, PolySeq2Seq
from skillfit.estimators._batching import token_lengths, training_batches
from skillfit.skills import PolyRouter, SkillConfig, inject_skills, skill_layers
from test_seq2seq import FAST, keyword_tasks

METHODS = {
    "lora-private": lambda kw: LoRAClassifier(sharing="private", **kw),
    "poly-s": lambda kw: PolyClassifier(n_skills=3, n_splits=2, **kw),
    "cpoly": lambda kw: CPolyClassifier(**kw),
    "cpoly-output": lambda kw: CPolyClassifier(combine="output", **kw),
    "mtlora": lambda kw: MTLoRAClassifier(**kw),
    "pemt": lambda kw: PEMTClassifier(**kw),
}


def frozen_weights(network):
    return {name: param for name, param in network.named_parameters() if not param.requires_grad}


@pytest.mark.slow
@pytest.mark.parametrize("make", METHODS.values(), ids=METHODS.keys())
def test_merged_inference_equals_the_unmerged_path_and_leaves_base_weights_bit_identical(make, tiny_kwargs, multitask):
    X, y = multitask
    clf = make({**tiny_kwargs, "learning_rate": 2e-2}).fit(X, y)
    before = {name: (param.detach().clone(), param.data_ptr()) for name, param in frozen_weights(clf.network_).items()}
    merged = clf.predict_proba(X)
    after = frozen_weights(clf.network_)
    for name, (value, pointer) in before.items():
        assert after[name].data_ptr() == pointer and torch.equal(after[name], value), name
    unmerged = clf.set_params(merged_inference=False).predict_proba(X)
    np.testing.assert_allclose(merged, unmerged, atol=1e-5, rtol=0)
    assert clf.network_.context.inference_cache is None  # merged copies and factors are dropped after predict


@pytest.mark.slow
@pytest.mark.parametrize("make", METHODS.values(), ids=METHODS.keys())
def test_every_task_factors_mixed_once_equal_mixing_per_batch(make, tiny_kwargs, multitask):
    X, y = multitask
    clf = make({**tiny_kwargs, "learning_rate": 2e-2}).fit(X, y)
    network, context = clf.network_.eval(), clf.network_.context
    texts = [text for text, _ in X[:24]]
    tasks = clf._task_indices(np.asarray([task for _, task in X[:24]], dtype=object))
    tasks[::5] = -1  # the unknown task, mixed with known ones in unsorted rows
    batch = clf._make_batch(np.arange(24), clf._encode(texts, tasks, None))

    def forward(scope, task_ids=batch["tasks"]):
        with torch.no_grad(), scope:
            return network(batch["input_ids"], batch["attention_mask"], task_ids)

    per_batch = forward(nullcontext())
    torch.testing.assert_close(forward(context.inference(merge=False)), per_batch, atol=1e-6, rtol=1e-5)
    # Past the cache budget every layer mixes per batch, as without the scope.
    torch.testing.assert_close(forward(context.inference(merge=False, cache_bytes=0)), per_batch, atol=0, rtol=0)
    for task in (-1, 1):  # a single-task batch, merged from the cached factors
        single = torch.full_like(batch["tasks"], task)
        torch.testing.assert_close(forward(context.inference(merge=True), single), forward(nullcontext(), single), atol=1e-5, rtol=1e-5)
    assert context.inference_cache is None


def test_every_task_factors_under_autocast_are_cast_once_and_match_per_batch(tiny_kwargs, multitask):
    X, y = multitask
    clf = CPolyClassifier(**tiny_kwargs, learning_rate=2e-2).fit(X, y)
    network, context = clf.network_.eval(), clf.network_.context
    texts, tasks = [text for text, _ in X[:16]], clf._task_indices(np.asarray([task for _, task in X[:16]], dtype=object))
    batch = clf._make_batch(np.arange(16), clf._encode(texts, tasks, None))

    def forward(scope):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), scope:
            return network(batch["input_ids"], batch["attention_mask"], batch["tasks"]).float()

    with context.inference(merge=False):
        cached = forward(nullcontext())
        tables = [value for key, value in context.inference_cache.items() if key[-1] == torch.bfloat16]
    assert tables and all(A.dtype == B.dtype == torch.bfloat16 for A, B in tables)
    torch.testing.assert_close(cached, forward(nullcontext()), atol=0.05, rtol=0.05)


@pytest.mark.slow
def test_merged_inference_for_an_unknown_task_uses_the_average_routing(tiny_kwargs, multitask):
    X, y = multitask
    clf = CPolyClassifier(**tiny_kwargs, handle_unknown_task="average").fit(X, y)
    rows = [(text, "omega") for text, _ in X[:20]]
    merged = clf.predict_proba(rows)
    np.testing.assert_allclose(merged, clf.set_params(merged_inference=False).predict_proba(rows), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["t5", "gpt2"])
def test_merged_generation_equals_unmerged(kind):
    X, y = keyword_tasks(32, seed=0)
    est = PolySeq2Seq(n_skills=2, backbone=tiny_backbone(kind), **{**FAST, "learning_rate": 2e-2, "num_beams": 2}).fit(X, y)
    merged = est.predict(X[:12])
    np.testing.assert_array_equal(merged, est.set_params(merged_inference=False).predict(X[:12]))


def skilled_bert(n_tasks=3):
    model = AutoModel.from_pretrained(tiny_backbone("bert"))
    context = inject_skills(model, SkillConfig(n_tasks=n_tasks, n_shared=3, n_exclusive=1, rank=4, combine="output"), ["query", "value"])
    model.eval()  # deterministic routing (no relaxed-Bernoulli noise)
    with torch.no_grad():
        for _, layer in skill_layers(model):
            for param in (layer.shared_B, layer.exclusive_B):
                param.normal_(std=0.1)
    return model, context


def test_task_sorted_rows_take_per_task_slices_with_the_same_outputs_and_gradients():
    model, context = skilled_bert()
    input_ids = torch.randint(5, 40, (8, 7), generator=torch.Generator().manual_seed(0))
    tasks = torch.tensor([2, 0, 1, 0, 2, 2, 1, 0])
    order = torch.argsort(tasks, stable=True)
    outputs, grads = [], []
    for rows in (torch.arange(8), order):  # unsorted rows: per-example gather; sorted: slices
        model.zero_grad()
        with context.tasks(tasks[rows]):
            assert (context._segments(8) is None) == (rows is not order)
            hidden = model(input_ids=input_ids[rows]).last_hidden_state
        hidden.pow(2).mean().backward()
        outputs.append(hidden[torch.argsort(rows)].detach())
        grads.append([p.grad.clone() for p in model.parameters() if p.requires_grad])
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-6, rtol=0)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_skills_are_mixed_once_per_task_of_the_batch_not_per_example(monkeypatch):
    model, context = skilled_bert()
    seen = []
    original = PolyRouter.forward

    def recording(self, tasks, context):
        seen.append(len(tasks))
        return original(self, tasks, context)

    monkeypatch.setattr(PolyRouter, "forward", recording)
    with torch.no_grad(), context.tasks(torch.tensor([1, 1, 0, 0, 0, 1, 1, 1])):
        model(input_ids=torch.randint(5, 40, (8, 5)))
    assert seen and set(seen) == {2}


def test_segments_follow_beam_repeats():
    _, context = skilled_bert()
    with context.tasks(torch.tensor([0, 0, 2])):
        assert context._segments(3) == [(0, 2), (2, 3)]
        assert context._segments(6) == [(0, 4), (4, 6)]  # two beams per example
    with context.tasks(torch.tensor([2, 0])):
        assert context._segments(2) is None


def padding(batches, encoded):
    lengths = np.asarray([len(ids) for ids in encoded["input_ids"]])
    return sum(lengths[batch].max() * len(batch) - lengths[batch].sum() for batch in batches)


def training_batches_of(clf, encoded, rng):
    """The batches of one training epoch of ``clf`` over ``encoded`` rows."""
    lengths = token_lengths(encoded) if clf.group_by_length else None
    return training_batches(encoded["tasks"], clf.batch_size, rng, lengths=lengths)


def test_length_aware_training_batches_cover_every_row_once_sorted_by_task_with_less_padding(tiny_kwargs):
    rng = np.random.default_rng(0)
    texts = [" ".join(["w1"] * int(n)) for n in rng.integers(1, 30, size=500)]
    tasks = rng.integers(0, 4, size=500)
    clf = LoRAClassifier(**{**tiny_kwargs, "batch_size": 16}, group_by_length=True)
    encoded = {"input_ids": [[1] * len(text.split()) for text in texts], "tasks": tasks}
    grouped = training_batches_of(clf, encoded, np.random.default_rng(1))
    shuffled = training_batches_of(clf.set_params(group_by_length=False), encoded, np.random.default_rng(1))
    for batches in (grouped, shuffled):
        np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(500))
        assert all((np.diff(tasks[batch]) >= 0).all() for batch in batches)
    assert padding(grouped, encoded) < 0.4 * padding(shuffled, encoded)
    again = training_batches_of(clf.set_params(group_by_length=True), encoded, np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(again, grouped))
    other = training_batches_of(clf, encoded, np.random.default_rng(2))
    assert not all(np.array_equal(a, b) for a, b in zip(other, grouped))


def test_prediction_batches_fill_one_task_batches_then_pool_the_leftovers_sorted_by_length(tiny_kwargs):
    clf = LoRAClassifier(**{**tiny_kwargs, "batch_size": 4})
    encoded = {"input_ids": [[1] * n for n in (5, 1, 3, 2, 4, 6, 2)], "tasks": np.asarray([1, 0, 1, 0, 1, 1, 1])}
    batches = [batch.tolist() for batch in clf._iter_eval_batches(encoded)]
    assert batches == [[6, 2, 4, 0], [1, 3, 5]]  # a full batch of task 1; the rest, sorted by task
    single = [batch.tolist() for batch in clf._iter_eval_batches(encoded, one_task_per_batch=True)]
    assert single == [[1, 3], [6, 2, 4, 0], [5]]


def test_many_small_tasks_are_predicted_in_full_mixed_batches(tiny_kwargs):
    rng = np.random.default_rng(0)
    tasks = np.repeat(np.arange(50), 3)
    encoded = {"input_ids": [[1] * n for n in rng.integers(1, 20, size=150)], "tasks": tasks}
    batches = list(LoRAClassifier(**{**tiny_kwargs, "batch_size": 32})._iter_eval_batches(encoded))
    assert [len(batch) for batch in batches] == [32, 32, 32, 32, 22]
    np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(150))
    assert all((np.diff(tasks[batch]) >= 0).all() for batch in batches)


@pytest.mark.slow
def test_gradient_checkpointing_recomputes_skill_layers_and_gives_the_same_model(tiny_kwargs, multitask, monkeypatch):
    X, y = multitask
    plain = CPolyClassifier(**tiny_kwargs).fit(X, y)
    calls = {"n": 0}
    from skillfit.skills import SkillLinear

    original = SkillLinear.forward

    def counting(self, x, *args, **kwargs):
        calls["n"] += torch.is_grad_enabled()
        return original(self, x, *args, **kwargs)

    monkeypatch.setattr(SkillLinear, "forward", counting)
    checkpointed = CPolyClassifier(**tiny_kwargs, gradient_checkpointing=True).fit(X, y)
    n_layers = len(list(skill_layers(checkpointed.network_.backbone)))
    steps = tiny_kwargs["max_epochs"] * -(-len(X) // tiny_kwargs["batch_size"])
    assert calls["n"] == 2 * n_layers * steps  # every layer runs again in backward
    assert checkpointed.loss_curve_ == plain.loss_curve_
    np.testing.assert_array_equal(checkpointed.predict_proba(X), plain.predict_proba(X))


def test_gradient_checkpointing_on_a_model_without_support_says_so(tiny_kwargs, multitask, monkeypatch):
    import transformers

    monkeypatch.setattr(transformers.BertModel, "supports_gradient_checkpointing", False)
    X, y = multitask
    with pytest.raises(ValueError, match="does not support gradient checkpointing; set gradient_checkpointing=False"):
        LoRAClassifier(**tiny_kwargs, gradient_checkpointing=True).fit(X, y)


def _threads_in_a_worker(backbone):
    from conftest import make_multitask

    X, y = make_multitask(20)
    before = torch.get_num_threads()
    LoRAClassifier(backbone=backbone, max_epochs=1, random_state=0, max_length=16).fit(X, y)
    return before, torch.get_num_threads()


@pytest.mark.slow
def test_joblib_workers_get_a_share_of_the_cores_and_fit_keeps_it(bert_path):
    main_threads = torch.get_num_threads()
    results = joblib.Parallel(n_jobs=2)(joblib.delayed(_threads_in_a_worker)(bert_path) for _ in range(2))
    share = max(1, (os.cpu_count() or 1) // 2)
    assert all(before == after == share for before, after in results)
    assert torch.get_num_threads() == main_threads


def test_torch_compile_compiles_the_backbone_for_training_only(tiny_kwargs, multitask, monkeypatch):
    # A real compile takes minutes on CPU (measured: 91 s for this tiny fit); here we check the wiring.
    X, y = multitask
    compiled = []

    def fake_compile(self, **kwargs):
        compiled.append((type(self).__name__, kwargs))
        self._compiled_call_impl = self._call_impl

    monkeypatch.setattr(torch.nn.Module, "compile", fake_compile)
    clf = LoRAClassifier(**tiny_kwargs, torch_compile=True).fit(X, y)
    assert compiled == [("BertModel", {"dynamic": True})]
    assert clf.network_.backbone._compiled_call_impl is None  # prediction and pickles stay eager
    clf.predict(X[:4])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_skill_forward_never_syncs_with_the_device():
    model, context = skilled_bert()
    model.cuda()
    input_ids = torch.randint(5, 40, (8, 7), device="cuda")
    for tasks in (torch.tensor([0, 0, 1, 1, 1, 2, 2, 2]), torch.tensor([2, 0, 1, 0, 2, 2, 1, 0])):
        with context.tasks(tasks):
            model(input_ids=input_ids)  # warm-up: host-to-device copies of the task groups
            torch.cuda.set_sync_debug_mode("error")
            try:
                model(input_ids=input_ids).last_hidden_state.sum()
            finally:
                torch.cuda.set_sync_debug_mode("default")


def reference_rows(layer, x, tasks, repeat=1):
    """``W0 x + x dW_t`` one row at a time, with ``dW_t`` from ``delta_weight`` (no batching paths)."""
    outputs = []
    for i, task in enumerate(tasks.repeat_interleave(repeat).tolist()):
        with layer.context.tasks(torch.tensor([task])):
            update = layer.delta_weight(torch.tensor([task]))[0]
        outputs.append(layer.base_layer(x[i]) + x[i] @ update)
    return torch.stack(outputs)


BATCHES = {
    "mixed": [3, 0, 5, 1, 0, 3, 6, 2, 4, 1],
    "task-sorted": [0, 0, 1, 2, 3, 3, 4, 5, 6, 6],
    "single-task": [4] * 10,
    "unknown-task": [-1, 2, -1, 0, 5],
    "unknown-sorted": [-1, -1, 0, 1, 2, 3, 4],
}


@pytest.mark.parametrize("limit", [0, 1, 4, 100], ids=lambda n: f"slice-limit-{n}")
@pytest.mark.parametrize("rows", BATCHES.values(), ids=BATCHES.keys())
@pytest.mark.parametrize("combine", ["weight", "output"])
@pytest.mark.parametrize("repeat", [1, 3], ids=["rows", "beams"])
def test_every_forward_path_equals_a_row_by_row_reference_in_outputs_and_gradients(monkeypatch, limit, rows, combine, repeat):
    from skillfit.skills import layer as layer_module

    monkeypatch.setitem(layer_module.SLICED_TASKS_LIMIT, "cpu", limit)
    torch.manual_seed(0)
    config = SkillConfig(n_tasks=7, n_shared=3, n_exclusive=2, n_splits=2, rank=4, exclusive_rank=4, combine=combine)
    model = torch.nn.Sequential(torch.nn.Linear(12, 8))
    context = inject_skills(model, config, ["0"])
    layer = model[0].double()
    layer.eval()  # deterministic routing
    with torch.no_grad():
        for param in (layer.shared_B, layer.exclusive_B, layer.router.routing_logits, layer.exclusive_mixer.exclusive_logits):
            param.normal_(std=0.5)
    tasks = torch.tensor(rows)
    x = torch.randn(len(rows) * repeat, 5, 12, dtype=torch.float64)
    results = []
    for compute in ("batched", "reference"):
        layer.zero_grad()
        with context.tasks(tasks):
            out = layer(x) if compute == "batched" else reference_rows(layer, x, tasks, repeat)
        (out * torch.linspace(-1, 1, out.shape[-1])).pow(2).sum().backward()
        grads = [param.grad.clone() for param in layer.parameters() if param.requires_grad]
        results.append((out.detach(), grads))
    (batched, batched_grads), (reference, reference_grads) = results
    # In float64 the paths agree to rounding: any gap is a bug, not summation order.
    for got, expected in zip([batched, *batched_grads], [reference, *reference_grads]):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("rows", [BATCHES["task-sorted"], BATCHES["unknown-sorted"], BATCHES["single-task"]], ids=["sorted", "unknown", "single"])
def test_gathered_product_equals_per_task_slices_to_1e_6_in_fp32(monkeypatch, rows):
    from skillfit.skills import layer as layer_module

    model, context = skilled_bert(n_tasks=7)
    input_ids = torch.randint(5, 40, (len(rows), 6), generator=torch.Generator().manual_seed(1))
    results = []
    for limit in (100, 0):  # per-task slices, then one gathered product
        monkeypatch.setitem(layer_module.SLICED_TASKS_LIMIT, "cpu", limit)
        model.zero_grad()
        with context.tasks(torch.tensor(rows)):
            hidden = model(input_ids=input_ids).last_hidden_state
        hidden.pow(2).mean().backward()
        results.append([hidden.detach(), *(p.grad.clone() for p in model.parameters() if p.requires_grad)])
    for sliced, gathered in zip(*results):
        torch.testing.assert_close(gathered, sliced, atol=1e-6, rtol=1e-6)


def test_many_tasks_take_one_gathered_product_not_one_per_task(monkeypatch):
    from skillfit.skills import layer as layer_module

    calls = []
    original = layer_module.low_rank_update
    monkeypatch.setattr(layer_module, "low_rank_update", lambda *args: calls.append(args[-1]) or original(*args))
    model, context = skilled_bert(n_tasks=40)
    with torch.no_grad(), context.tasks(torch.arange(40)):  # sorted, 40 distinct tasks
        model(input_ids=torch.randint(5, 40, (40, 5)))
    assert calls and all(segments is None for segments in calls)
    calls.clear()
    with torch.no_grad(), context.tasks(torch.tensor([0, 0, 1, 1])):  # sorted, 2 tasks: slices on CPU
        model(input_ids=torch.randint(5, 40, (4, 5)))
    assert calls and all(segments == [(0, 2), (2, 4)] for segments in calls)


@pytest.mark.slow
def test_predict_in_chunks_equals_predict_at_once_and_mixes_once(tiny_kwargs, multitask, monkeypatch):
    from skillfit.estimators import _prediction
    from skillfit.skills import context as context_module

    X, y = multitask
    clf = CPolyClassifier(**tiny_kwargs).fit(X, y)
    seq = PolySeq2Seq(n_skills=2, backbone=tiny_backbone("t5"), max_length=32, **FAST).fit(*keyword_tasks(24, seed=0))
    whole = clf.predict_proba(X), seq.predict(keyword_tasks(24, seed=1)[0])
    scopes = []
    original = context_module.TaskContext.inference

    def counted(context, *args, **kwargs):
        scopes.append(context.inference_cache is None)  # a fresh cache, or nested in one
        return original(context, *args, **kwargs)

    monkeypatch.setattr(context_module.TaskContext, "inference", counted)
    monkeypatch.setattr(_prediction, "PREDICT_CHUNK_ROWS", 7)  # 240 rows: 35 chunks, the last of 2 rows
    chunked = clf.predict_proba(X), seq.predict(keyword_tasks(24, seed=1)[0])
    np.testing.assert_allclose(chunked[0], whole[0], atol=1e-6)
    np.testing.assert_array_equal(chunked[1], whole[1])
    assert scopes.count(True) == 2  # one cache per predict call, whatever the number of chunks
    assert len(scopes) > 2 + 35
    # A chunk holds texts of similar length: the rows sorted by characters.
    seen = []
    monkeypatch.setattr(clf, "_predict_proba_encoded", lambda encoded: seen.append(encoded) or np.zeros((len(encoded["tasks"]), 6)))
    clf.predict_proba(X)
    lengths = [sorted(len(ids) for ids in encoded["input_ids"]) for encoded in seen]
    assert all(first[-1] <= second[0] + 2 for first, second in zip(lengths, lengths[1:]))
