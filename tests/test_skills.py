"""The skill core: routing math, parity with peft's Poly, degenerate cases, gradients."""

import copy

import pytest
import torch
from torch import nn
from transformers import AutoModel
from transformers.pytorch_utils import Conv1D

from skillfit.skills import PolyRouter, SkillConfig, SkillLinear, TaskContext, inject_skills, skill_layers
from skillfit.skills.routing import UniformRouter

peft = pytest.importorskip("peft")


def _randomise(model, generator_seed=0):
    """Give every trainable tensor non-trivial values (B starts at zero otherwise)."""
    generator = torch.Generator().manual_seed(generator_seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)


def _skilled(bert_path, config, targets=("query", "value")):
    model = AutoModel.from_pretrained(bert_path)
    context = inject_skills(model, config, list(targets))
    _randomise(model)
    return model, context


@pytest.mark.parametrize("n_splits", [1, 2])
def test_poly_matches_peft_poly(bert_path, n_splits):
    base = AutoModel.from_pretrained(bert_path).eval()
    peft_config = peft.PolyConfig(r=4, n_tasks=3, n_skills=4, n_splits=n_splits, target_modules=["query", "value"])
    reference = peft.get_peft_model(copy.deepcopy(base), peft_config)
    _randomise(reference)
    ours = copy.deepcopy(base)
    # peft scales by 1/r: alpha=1.
    context = inject_skills(ours, SkillConfig(n_tasks=3, n_shared=4, n_splits=n_splits, rank=4, alpha=1.0), ["query", "value"])
    peft_layers = {
        name.replace("base_model.model.", ""): module
        for name, module in reference.named_modules()
        if hasattr(module, "poly_lora_A")
    }
    assert len(peft_layers) == len(list(skill_layers(ours))) == 4
    for name, layer in skill_layers(ours):
        source = peft_layers[name]
        layer.shared_A.data.copy_(source.poly_lora_A["default"].data)
        layer.shared_B.data.copy_(source.poly_lora_B["default"].data)
        layer.router.routing_logits.data.copy_(
            source.poly_router["default"].module_logits.data.view(3, n_splits, 4)
        )
    input_ids = torch.randint(5, 40, (6, 9), generator=torch.Generator().manual_seed(1))
    task_ids = torch.tensor([0, 2, 1, 2, 0, 1])
    reference.eval()
    ours.eval()
    with torch.no_grad():
        expected = reference.base_model(input_ids=input_ids, task_ids=task_ids).last_hidden_state
        with context.tasks(task_ids):
            got = ours(input_ids=input_ids).last_hidden_state
    plain = base(input_ids=input_ids).last_hidden_state
    assert (expected - plain).abs().max() > 1e-2, "the skills must change the output for the test to mean anything"
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_router_training_samples_and_eval_is_sigmoid():
    router = PolyRouter(n_tasks=2, n_splits=3, n_skills=4)
    with torch.no_grad():
        router.routing_logits.normal_()
    tasks = torch.tensor([1, 0])
    router.eval()
    expected = torch.sigmoid(router.routing_logits[tasks])
    expected = expected / expected.sum(-1, keepdim=True)
    context = TaskContext()
    torch.testing.assert_close(router(tasks, context), expected)
    router.train()
    sampled = router(tasks, context)
    torch.testing.assert_close(sampled.sum(-1), torch.ones(2, 3))
    assert not torch.allclose(sampled, expected), "training must sample a relaxed Bernoulli"
    assert sampled.requires_grad


def _forward(model, context, task_ids, seed=0, train=False):
    model.train(train)
    input_ids = torch.randint(5, 40, (len(task_ids), 7), generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    with context.tasks(torch.tensor(task_ids)):
        return model(input_ids=input_ids).last_hidden_state


def _copy_matching(source, target):
    """Copy every parameter of ``source`` into the same-named, same-shaped one of ``target``."""
    target_params = dict(target.named_parameters())
    for name, param in source.named_parameters():
        if name in target_params and target_params[name].shape == param.shape:
            target_params[name].data.copy_(param.data)


@pytest.mark.parametrize("train", [False, True])
def test_poly_with_one_skill_is_shared_lora(bert_path, train):
    poly, poly_context = _skilled(bert_path, SkillConfig(n_tasks=3, n_shared=1, rank=4, routing="poly"))
    lora, lora_context = _skilled(bert_path, SkillConfig(n_tasks=3, n_shared=1, rank=4, routing="none"))
    _copy_matching(poly, lora)
    tasks = [0, 1, 2, 1]
    assert torch.equal(_forward(poly, poly_context, tasks, train=train), _forward(lora, lora_context, tasks, train=train))


def test_cpoly_degenerate_configs_are_the_named_methods(bert_path):
    # n_exclusive=0: Poly. n_shared=0: a private LoRA per task.
    cpoly, cpoly_context = _skilled(bert_path, SkillConfig(n_tasks=3, n_shared=2, n_exclusive=0))
    poly, poly_context = _skilled(bert_path, SkillConfig(n_tasks=3, n_shared=2))
    _copy_matching(cpoly, poly)
    assert torch.equal(_forward(cpoly, cpoly_context, [0, 2]), _forward(poly, poly_context, [0, 2]))

    private, private_context = _skilled(bert_path, SkillConfig(n_tasks=3, n_shared=0, n_exclusive=1, routing="none"))
    # A private LoRA written out by hand: y = W0 x + s x A_t B_t with task t's own A, B.
    layer = dict(skill_layers(private))["encoder.layer.0.attention.self.query"]
    x = torch.randn(2, 5, 32)
    with private_context.tasks(torch.tensor([2, 0])), torch.no_grad():
        got = layer(x)
    for row, task in enumerate([2, 0]):
        A, B = layer.exclusive_A[task, 0, 0], layer.exclusive_B[task, 0, 0]
        expected = layer.base_layer(x[row]) + layer.config.scale * x[row] @ A @ B
        torch.testing.assert_close(got[row], expected)


def test_weight_combination_formula_with_heads():
    config = SkillConfig(n_tasks=2, n_shared=3, n_exclusive=2, n_splits=2, rank=2, alpha=4.0)
    layer = SkillLinear(nn.Linear(6, 4), config, TaskContext())
    _randomise(layer)
    layer.eval()
    task = 1
    w = layer.router.eval_weights()[task]  # (H, K)
    v = torch.softmax(layer.exclusive_mixer.exclusive_logits[task], -1)  # (H, E)
    A = torch.cat([
        sum(w[h, k] * layer.shared_A[h, k] for k in range(3)) + sum(v[h, e] * layer.exclusive_A[task, h, e] for e in range(2))
        for h in range(2)
    ])
    B = torch.cat([
        sum(w[h, k] * layer.shared_B[h, k] for k in range(3)) + sum(v[h, e] * layer.exclusive_B[task, h, e] for e in range(2))
        for h in range(2)
    ], dim=1)
    x = torch.randn(1, 3, 6)
    with layer.context.tasks([task]), torch.no_grad():
        got = layer(x)
    torch.testing.assert_close(got[0], layer.base_layer(x[0]) + 2.0 * x[0] @ A @ B)


def test_output_combination_sums_two_products():
    config = SkillConfig(n_tasks=2, n_shared=2, n_exclusive=1, rank=2, combine="output")
    layer = SkillLinear(nn.Linear(6, 4), config, TaskContext())
    _randomise(layer)
    layer.eval()
    x = torch.randn(1, 3, 6)
    tasks = torch.tensor([1])
    (A_shared, B_shared, _), (A_exclusive, B_exclusive, _) = layer.task_products(tasks)
    w = layer.router.eval_weights()[1, 0]
    torch.testing.assert_close(A_shared[0], sum(w[k] * layer.shared_A[0, k] for k in range(2)))
    torch.testing.assert_close(B_exclusive[0], layer.exclusive_B[1, 0, 0])
    expected = layer.base_layer(x[0]) + layer.config.scale * (x[0] @ A_shared[0] @ B_shared[0] + x[0] @ A_exclusive[0] @ B_exclusive[0])
    with layer.context.tasks(tasks), torch.no_grad():
        got = layer(x)
    torch.testing.assert_close(got[0], expected)
    weight_space = SkillLinear(nn.Linear(6, 4), SkillConfig(n_tasks=2, n_shared=2, n_exclusive=1, rank=2), TaskContext())
    weight_space.load_state_dict(layer.state_dict())
    weight_space.eval()
    with weight_space.context.tasks(tasks), torch.no_grad():
        assert not torch.allclose(weight_space(x), got), "weight- and output-space mixing differ"


@pytest.mark.parametrize("combine", ["weight", "output"])
def test_exclusive_skills_get_no_gradient_from_other_tasks(bert_path, combine):
    model, context = _skilled(bert_path, SkillConfig(n_tasks=3, n_shared=2, n_exclusive=2, combine=combine))
    output = _forward(model, context, [0, 2, 0], train=True)
    output.pow(2).sum().backward()
    for _, layer in skill_layers(model):
        for param in (layer.exclusive_A, layer.exclusive_B, layer.exclusive_mixer.exclusive_logits):
            assert torch.count_nonzero(param.grad[1]) == 0, "task 1 is not in the batch"
            assert torch.count_nonzero(param.grad[0]) > 0 and torch.count_nonzero(param.grad[2]) > 0
        assert torch.count_nonzero(layer.router.routing_logits.grad[1]) == 0
        assert torch.count_nonzero(layer.shared_A.grad) > 0


def test_conv1d_layer_matches_formula():
    base = Conv1D(nf=4, nx=6)
    config = SkillConfig(n_tasks=2, n_shared=2, n_splits=2, rank=2)
    layer = SkillLinear(base, config, TaskContext())
    _randomise(layer)
    layer.eval()
    x = torch.randn(2, 3, 6)
    with layer.context.tasks([0, 1]), torch.no_grad():
        got = layer(x)
        delta = layer.delta_weight(torch.tensor([0, 1]))
    assert delta.shape == (2, 6, 4)
    for row in range(2):
        torch.testing.assert_close(got[row], x[row] @ base.weight + base.bias + x[row] @ delta[row])


def test_injection_into_gpt2_and_beam_style_repeats():
    from _tiny import tiny_backbone

    model = AutoModel.from_pretrained(tiny_backbone("gpt2"))
    context = inject_skills(model, SkillConfig(n_tasks=2, n_shared=2, rank=2), ["c_attn"])
    names = [name for name, _ in skill_layers(model)]
    assert names == ["h.0.attn.c_attn", "h.1.attn.c_attn"]
    _randomise(model)
    model.eval()
    input_ids = torch.randint(5, 40, (2, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        with context.tasks([0, 1]):
            single = model(input_ids=input_ids).last_hidden_state
        # Each example repeated 3 times in a row, as generation with 3 beams does.
        with context.tasks([0, 1]):
            repeated = model(input_ids=input_ids.repeat_interleave(3, dim=0)).last_hidden_state
    torch.testing.assert_close(repeated[::3], single)
    torch.testing.assert_close(repeated[2::3], single)


def test_backbone_is_frozen_and_only_skills_train(bert_path):
    model, _ = _skilled(bert_path, SkillConfig(n_tasks=2, n_shared=2, n_exclusive=1))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(
        name.rsplit(".", 1)[-1] in {"shared_A", "shared_B", "exclusive_A", "exclusive_B", "routing_logits"}
        for name in trainable
    )


def test_n_splits_must_divide_width():
    with pytest.raises(ValueError, match="n_splits=5 does not divide the input width 6"):
        SkillLinear(nn.Linear(6, 4), SkillConfig(n_tasks=1, n_splits=5), TaskContext())


def test_unmatched_target_modules_lists_layer_names(bert_path):
    model = AutoModel.from_pretrained(bert_path)
    with pytest.raises(ValueError, match=r"matches no linear layer.*'query'"):
        inject_skills(model, SkillConfig(n_tasks=1), ["q_proj"])


def test_forward_without_task_ids_is_a_clear_error(bert_path):
    model, _ = _skilled(bert_path, SkillConfig(n_tasks=1))
    with pytest.raises(RuntimeError, match="without task ids"):
        model(input_ids=torch.tensor([[5, 6, 7]]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_tasks=1, rank=0), "rank must be an integer >= 1"),
        (dict(n_tasks=1, n_shared=0, n_exclusive=0), "at least one skill"),
        (dict(n_tasks=1, n_shared=2, routing="none"), "routing='none'"),
        (dict(n_tasks=1, combine="sum"), "combine must be one of"),
    ],
)
def test_skill_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SkillConfig(**kwargs)


def test_per_task_fills_only_the_rows_of_the_unknown_task():
    context, table = TaskContext(), torch.arange(6.0).view(3, 2)
    calls = []

    def mean_row():
        calls.append(1)
        return table.mean(dim=0)

    known = torch.tensor([0, 2])
    torch.testing.assert_close(context.per_task(known, lambda t: table[t], mean_row), table[known])
    assert not calls, "the unknown value is only computed for a batch that holds task -1"
    tasks = torch.tensor([-1, 2])
    with context.tasks(tasks):
        torch.testing.assert_close(context.per_task(tasks, lambda t: table[t], mean_row), torch.stack([table.mean(0), table[2]]))
        allowed, rows = context.per_task(tasks, lambda t: (table[t] > 4, table[t]), True)
    assert allowed.dtype == torch.bool and allowed.tolist() == [[True, True], [False, True]]
    torch.testing.assert_close(rows, torch.tensor([[1.0, 1.0], table[2].tolist()]))


def test_a_plain_lora_layer_pickled_without_a_router_gets_its_uniform_router_back():
    """Layers pickled before plain LoRA had a UniformRouter held None; unpickled, they compute the same."""
    import pickle

    torch.manual_seed(0)
    layer = SkillLinear(nn.Linear(8, 6), SkillConfig(n_tasks=2, n_shared=1, routing="none", rank=2), TaskContext())
    with torch.no_grad():
        layer.shared_B.normal_()
    x, tasks = torch.randn(3, 8), torch.tensor([0, 1, 1])
    with layer.context.tasks(tasks):
        expected = layer(x)
    layer.router = None  # as the layer was before the router interface
    restored = pickle.loads(pickle.dumps(layer))
    assert isinstance(restored.router, UniformRouter)
    with restored.context.tasks(tasks):
        torch.testing.assert_close(restored(x), expected, rtol=0, atol=0)


def test_a_shared_lora_runs_merged_on_mixed_task_batches_and_cpoly_gathers():
    """Every task of a shared LoRA has one update: a mixed batch runs one folded weight, as a one-task batch does."""
    torch.manual_seed(0)
    for config, merged in ((SkillConfig(n_tasks=3, n_shared=1, routing="none"), True),
                           (SkillConfig(n_tasks=3, n_shared=2, n_exclusive=1), False)):
        context = TaskContext()
        layer = SkillLinear(nn.Linear(8, 4), config, context).eval()
        for param in layer.parameters():
            if param.requires_grad:
                nn.init.normal_(param)
        x = torch.randn(3, 5, 8)
        with torch.no_grad(), context.inference(merge=True), context.tasks([2, 0, 1]):
            mixed = layer(x)
            folded = [key for key in context.inference_cache if "merged" in key]
        with torch.no_grad(), context.tasks([2, 0, 1]):
            reference = layer(x)  # outside the inference scope: per-task products
        assert bool(folded) == merged
        torch.testing.assert_close(mixed, reference, rtol=1e-5, atol=1e-5)
        if merged:
            weight = layer.merged_weight(torch.tensor([0]))  # any task's: they are all the same
            torch.testing.assert_close(mixed, nn.functional.linear(x, weight, layer.base_layer.bias), rtol=1e-6, atol=1e-5)  # float32 rounding of outputs near 10


def test_the_context_plumbing_that_skill_layers_read():
    """TaskContext's internals for skill layers: distinct tasks, row ranges, groups, row order, cache budget, scope values."""
    from skillfit.skills import TaskContext

    context = TaskContext()
    with context.tasks([3, -1, 3, 0]):
        assert context._host_tasks() == [-1, 0, 3]
    with context.tasks([0, 0, 1]):
        assert context._segments(3) == [(0, 2), (2, 3)]
        assert context._segments(6) == [(0, 4), (4, 6)]  # two beams per example
    with context.tasks([1, 0]):
        assert context._segments(2) is None  # rows not grouped by task
    with context.tasks([2, 0, 2]):
        batch_tasks, example_group = context._groups(6, torch.device("cpu"))  # two beams each
    assert batch_tasks.tolist() == [0, 2] and example_group.tolist() == [1, 1, 0, 0, 1, 1]
    with context.tasks([1, -1, 0]):
        assert context._row_tasks(3, torch.device("cpu")).tolist() == [2, 0, 1]
    with context.inference(cache_bytes=100):
        assert (context._reserve_cache_bytes(60), context._reserve_cache_bytes(60), context.cache_bytes_left) == \
            (True, False, 40)
    with context._every_task(3, torch.device("cpu")) as tasks:
        assert tasks.tolist() == [-1, 0, 1, 2] and context.has_unknown
    assert not context.has_unknown
    calls = []
    with context.tasks([0, 1]):
        first = context._scope_value(("rows",), lambda: calls.append(1) or "gathered")
        again = context._scope_value(("rows",), lambda: calls.append(1) or "gathered")
    assert (first, again, len(calls)) == ("gathered", "gathered", 1)


def test_the_plumbing_s_old_public_names_still_answer_with_a_warning():
    from skillfit.skills import TaskContext

    context = TaskContext()
    with context.tasks([0, 0, 1]):
        with pytest.warns(FutureWarning, match=r"TaskContext.segments is internal since skillfit 0.2 \(now _segments\)"):
            assert context.segments(3) == [(0, 2), (2, 3)]
    with pytest.raises(AttributeError, match="no attribute 'segmentz'"):
        _ = context.segmentz
