"""Saved folders whose parts disagree: every damage loads to a clear error, or to the same model.

Damage is generated from real saved models (a C-Poly and a Poly classifier with a task
identifier, a Poly Seq2Seq on a decoder): every JSON field removed, retyped, lengthened
or shortened; every tensor renamed, dropped, reshaped, cast or filled with NaN; the
weights file truncated; files swapped between two models. ``from_pretrained`` must
raise a clear error of ours, or load a model that predicts what the saved one did.
Edits to ``params`` that stay valid (``max_new_tokens + 1``) legitimately change
predictions and are not damage. The default run takes a fixed sample of the JSON cases;
``SKILLFIT_HYPOTHESIS_PROFILE=nightly`` takes all (about 5,200).
"""

import copy
import json
import os
import random
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from _strategies import assert_clean
from _tiny import tiny_backbone
from conftest import make_multitask
from skillfit import CPolyClassifier, PolyClassifier, PolySeq2Seq

pytestmark = pytest.mark.slow  # property-based sweeps: thousands of cases

CONFIG, WEIGHTS = "skillfit_config.json", "skillfit_model.safetensors"
DEEP = os.environ.get("SKILLFIT_HYPOTHESIS_PROFILE") == "nightly"
JSON_SAMPLE = None if DEEP else 120
X, Y = make_multitask(6)
TINY = dict(max_epochs=1, rank=2, max_length=16, random_state=0)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("saved")
    models = {
        "cpoly": CPolyClassifier(n_shared=2, n_exclusive=1, backbone=tiny_backbone("bert"), **TINY).fit(X, Y),
        "poly": PolyClassifier(n_skills=2, backbone=tiny_backbone("bert"), handle_unknown_task="infer", **TINY).fit(X, Y),
        "s2s": PolySeq2Seq(n_skills=2, backbone=tiny_backbone("llama"), max_new_tokens=2, **TINY).fit(
            X, [label.split(":")[1] for label in Y]),
    }
    for name, est in models.items():
        est.save_pretrained(root / name)
    return root, models


def outputs(est):
    return est.predict_proba(X[:4]) if hasattr(est, "predict_proba") else est.predict(X[:4])


def loads_cleanly(folder, original):
    """None when the damaged folder is refused clearly or loads to the same model; else what went wrong."""
    result = assert_clean(lambda: type(original).from_pretrained(folder))
    if isinstance(result, BaseException):
        return None
    ours, theirs = outputs(result), outputs(original)
    same = np.array_equal(ours, theirs) if ours.dtype == object else np.allclose(ours, theirs, atol=1e-5)
    return None if same else "loaded, but predicts differently"


def leaves(obj, path=()):
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from leaves(value, path + (key,))
    elif isinstance(obj, list):
        yield path
        for i, value in enumerate(obj[:2]):
            yield from leaves(value, path + (i,))
    else:
        yield path


def json_damage(config):
    """(description, damaged config) for every leaf of the config: removed, retyped, lengthened, shortened."""
    for path in leaves(config):
        if not path or path[0] == "params" or path[:2] == ("backbone", "name"):
            continue  # valid parameter edits change predictions by design; a new name asks the hub
        parent_path, key = path[:-1], path[-1]
        value = config
        for part in path:
            value = value[part]
        changes = [("removed", None)] + [(f"retyped {alt!r}", alt) for alt in
                                         (None, "text", -1, 0, 10**9, 1.5, True, [], {}, [1, 2]) if alt != value]
        if isinstance(value, list):
            changes += [("lengthened", value + value[:1] if value else [0]), ("shortened", value[:-1])]
        if isinstance(value, int) and not isinstance(value, bool):
            changes.append(("plus one", value + 1))
        for what, new in changes:
            damaged = copy.deepcopy(config)
            parent = damaged
            for part in parent_path:
                parent = parent[part]
            if what == "removed":
                parent.pop(key)
            else:
                parent[key] = new
            yield f"{'/'.join(map(str, path))} {what}", damaged


def tensor_damage(tensors):
    for key, tensor in tensors.items():
        flat = tensor.reshape(-1)
        yield f"{key} renamed", {**{k: v for k, v in tensors.items() if k != key}, key + ".x": tensor}
        yield f"{key} dropped", {k: v for k, v in tensors.items() if k != key}
        yield f"{key} reshaped", {**tensors, key: flat[: max(1, flat.numel() - 1)].clone()}
        yield f"{key} float16", {**tensors, key: tensor.half() if tensor.is_floating_point() else tensor.float()}
        yield f"{key} int64", {**tensors, key: tensor.long()}
        if tensor.is_floating_point():
            yield f"{key} NaN", {**tensors, key: torch.full_like(tensor, float("nan"))}


def fresh_copy(source, tmp_path):
    target = tmp_path / "damaged"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    return target


@pytest.mark.parametrize("name", ["cpoly", "poly", "s2s"])
def test_every_damaged_json_field_is_refused_or_harmless(saved, name, tmp_path):
    root, models = saved
    config = json.loads((root / name / CONFIG).read_text())
    cases = list(json_damage(config))
    if JSON_SAMPLE is not None:
        cases = random.Random(0).sample(cases, min(JSON_SAMPLE, len(cases)))
    failures = []
    for description, damaged in cases:
        folder = fresh_copy(root / name, tmp_path)
        (folder / CONFIG).write_text(json.dumps(damaged))
        try:
            problem = loads_cleanly(folder, models[name])
        except AssertionError as error:
            problem = str(error).splitlines()[0]
        if problem:
            failures.append(f"{description}: {problem}")
    assert not failures, f"{len(failures)} of {len(cases)} damaged configs:\n" + "\n".join(failures[:10])


@pytest.mark.parametrize("name", ["cpoly", "poly", "s2s"])
def test_every_damaged_tensor_is_refused_or_harmless(saved, name, tmp_path):
    root, models = saved
    tensors = load_file(str(root / name / WEIGHTS))
    failures, n_cases = [], 0
    for description, damaged in tensor_damage(tensors):
        n_cases += 1
        folder = fresh_copy(root / name, tmp_path)
        save_file({k: v.contiguous() for k, v in damaged.items()}, str(folder / WEIGHTS))
        try:
            problem = loads_cleanly(folder, models[name])
        except AssertionError as error:
            problem = str(error).splitlines()[0]
        if problem:
            failures.append(f"{description}: {problem}")
    raw = (root / name / WEIGHTS).read_bytes()
    for cut in (0, 8, 100, len(raw) // 2, len(raw) - 1):
        n_cases += 1
        folder = fresh_copy(root / name, tmp_path)
        (folder / WEIGHTS).write_bytes(raw[:cut])
        error = assert_clean(lambda: type(models[name]).from_pretrained(folder))  # noqa: B023
        if not isinstance(error, OSError) or WEIGHTS not in str(error):
            failures.append(f"truncated to {cut} bytes: {error!r}")
    assert not failures, f"{len(failures)} of {n_cases} damaged weights:\n" + "\n".join(failures[:10])


def test_files_swapped_between_models_are_refused(saved, tmp_path):
    root, models = saved
    failures = []
    for a in models:
        for b in models:
            for file in (CONFIG, WEIGHTS):
                if a == b:
                    continue
                folder = fresh_copy(root / a, tmp_path)
                shutil.copy(root / b / file, folder / file)
                try:
                    problem = loads_cleanly(folder, models[a])
                except AssertionError as error:
                    problem = str(error).splitlines()[0]
                if problem:
                    failures.append(f"{file} of {b} in {a}: {problem}")
    assert not failures, "\n".join(failures)


def test_a_task_list_shortened_by_one_names_the_file_and_the_field(saved, tmp_path):
    root, models = saved
    folder = fresh_copy(root / "cpoly", tmp_path)
    config = json.loads((folder / CONFIG).read_text())
    config["fitted"]["tasks_"]["__ndarray__"].pop()
    (folder / CONFIG).write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"skillfit_config.json' is damaged: 'network.layers.* \(3\) disagrees with "
                                         r"the 2 task ids of 'fitted.tasks_'"):
        CPolyClassifier.from_pretrained(folder)
