"""Every error a user can cause names the problem and says what to change."""

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

from skillfit import CPolyClassifier, LoRAClassifier, PolyClassifier
from skillfit._validation import InvalidParameterError

X_OK = [("good movie", "a"), ("bad movie", "a"), ("spam text", "b"), ("ham text", "b")]
Y_OK = ["pos", "neg", "spam", "ham"]


@pytest.mark.parametrize(
    "X, error, message",
    [
        (np.array([["a", "t", "extra"]] * 4, dtype=object), ValueError, r"shape \(4, 3\).*exactly two entries"),
        (["just a text"] * 4, ValueError, "1-dimensional.*pair each text with its task id"),
        (pd.DataFrame({"text": ["a"] * 4, "topic": ["t"] * 4}), ValueError, r"missing the column\(s\) \['task'\].*task_column="),
        ([("fine", "a"), ("  ", "a"), ("x", "b"), ("y", "b")], ValueError, "Row 1 holds an empty text"),
        ([("fine", "a"), (3.5, "a"), ("x", "b"), ("y", "b")], TypeError, "row 1 holds float 3.5"),
        ([("fine", "a"), ("x", None), ("x", "b"), ("y", "b")], ValueError, r"Task ids are missing .* rows \[1\]"),
        ([("fine", "a"), ("x", 1), ("x", "b"), ("y", "b")], TypeError, "all strings or all integers"),
        ([], ValueError, "0 samples"),
    ],
)
def test_bad_X(X, error, message, tiny_kwargs):
    with pytest.raises(error, match=message):
        PolyClassifier(**tiny_kwargs).fit(X, Y_OK)


@pytest.mark.parametrize(
    "y, message",
    [
        (["pos", np.nan, "spam", "ham"], r"missing labels \(None or NaN\) at positions \[1\]"),
        (["pos", None, "spam", "ham"], r"missing labels \(None or NaN\) at positions \[1\]"),
        (["pos", "neg", "spam"], "X has 4 samples, y has 3"),
        (["same"] * 4, "needs at least 2 classes in y; got 1 class"),
        ([0.1, 0.7, 0.3, 0.2], "y holds continuous values .* a classifier needs discrete labels"),
    ],
)
def test_bad_y(y, message, tiny_kwargs):
    with pytest.raises(ValueError, match=message):
        PolyClassifier(**tiny_kwargs).fit(X_OK, y)


def test_unknown_task_at_predict_names_it(tiny_kwargs):
    clf = LoRAClassifier(**tiny_kwargs).fit(X_OK, Y_OK)
    with pytest.raises(ValueError, match=r"Unknown task id\(s\) \['zeta'\].*fitted on tasks \['a', 'b'\]"):
        clf.predict([("some text", "zeta")])


def test_n_splits_must_divide_layer_width(tiny_kwargs):
    with pytest.raises(ValueError, match="n_splits=5 does not divide the input width 32 of layer 'encoder.layer.0"):
        PolyClassifier(n_splits=5, **tiny_kwargs).fit(X_OK, Y_OK)


@pytest.mark.parametrize(
    "estimator, message",
    [
        (CPolyClassifier(rank=0), r"The 'rank' parameter of CPolyClassifier must be an int in the range \[1, inf\). Got 0 instead."),
        (PolyClassifier(n_skills=2.5), r"The 'n_skills' parameter of PolyClassifier must be an int in the range \[1, inf\). Got 2.5"),
        (CPolyClassifier(combine="sum"), r"The 'combine' parameter of CPolyClassifier must be a str among \{'weight', 'output'\}. Got 'sum'"),
        (LoRAClassifier(sharing="none"), r"'sharing' parameter of LoRAClassifier must be a str among \{'shared', 'private'\}"),
        (CPolyClassifier(learning_rate=-1.0), r"'learning_rate' parameter .* must be a float in the range \(0, 1000.0\]"),
        (CPolyClassifier(random_state="seed"), r"'random_state' parameter .* must be an int in the range \[0, 4294967295\] or None"),
        (CPolyClassifier(verbose=3), r"'verbose' parameter .* must be an int in the range \[0, 2\]"),
        (CPolyClassifier(target_modules=[]), r"'target_modules' parameter .* must be None, a non-empty list of str or a str"),
        (CPolyClassifier(checkpoint_dir=5), r"'checkpoint_dir' parameter .* must be None or a str or path-like folder"),
        (CPolyClassifier(checkpoint_every=0), r"'checkpoint_every' parameter .* must be None or an int in the range \[1, inf\)"),
    ],
)
def test_invalid_parameters(estimator, message):
    with pytest.raises(InvalidParameterError, match=message):
        estimator.fit(X_OK, Y_OK)


@pytest.mark.parametrize(
    "estimator, message",
    [
        (CPolyClassifier(target_modules="query|("), r"target_modules='query\|\(' is not a valid regular expression \(missing \)"),
        (CPolyClassifier(checkpoint_dir="\ud800"), r"checkpoint_dir='\\ud800' cannot name a folder on this system"),
        (CPolyClassifier(checkpoint_dir="a\0b"), r"checkpoint_dir='a\\x00b' cannot name a folder .* NUL character"),
    ],
)
def test_parameters_that_do_not_parse(estimator, message):
    with pytest.raises(ValueError, match=message):
        estimator.fit(X_OK, Y_OK)


def test_cpoly_needs_a_skill(tiny_kwargs):
    with pytest.raises(ValueError, match="n_shared \\+ n_exclusive must be >= 1"):
        CPolyClassifier(n_shared=0, n_exclusive=0, **tiny_kwargs).fit(X_OK, Y_OK)


def test_target_modules_that_match_nothing(tiny_kwargs):
    with pytest.raises(ValueError, match=r"matches no linear layer of BertModel.*'query'"):
        LoRAClassifier(**{**tiny_kwargs, "target_modules": ["q_proj"]}).fit(X_OK, Y_OK)


def test_backbone_not_found_offline_says_how_to_use_a_local_copy(monkeypatch, tiny_kwargs):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match=r"Could not load the backbone 'some-org/no-such-model'.*backbone='/path/to/model'"):
        LoRAClassifier(**{**tiny_kwargs, "backbone": "some-org/no-such-model"}).fit(X_OK, Y_OK)
    with pytest.raises(ValueError, match=r"backbone directory '/no/such/dir' does not exist"):
        LoRAClassifier(**{**tiny_kwargs, "backbone": "/no/such/dir"}).fit(X_OK, Y_OK)


def test_predict_before_fit():
    for method in ("predict", "predict_proba", "predict_log_proba", "score"):
        with pytest.raises(NotFittedError):
            args = (X_OK, Y_OK) if method == "score" else (X_OK,)
            getattr(CPolyClassifier(), method)(*args)


def test_cuda_requested_without_cuda(tiny_kwargs, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device='cuda' was requested but CUDA is not available"):
        LoRAClassifier(**{**tiny_kwargs, "device": "cuda"}).fit(X_OK, Y_OK)


# ------------------------------------------------------------------ the audit of issue 15
LONG_TEXT = " ".join(["w1"] * 100)  # more tokens than the tiny backbones' 64 positions


@pytest.mark.parametrize("device, message", [
    ("tpu", "device='tpu' names no device|not 'tpu'"),
    ("meta", "skillfit trains on 'cpu', 'cuda', 'mps' devices, not 'meta'"),
    ("gpu7", "device='gpu7' names no device"),
])
def test_devices_that_cannot_train_are_named(device, message, tiny_kwargs):
    with pytest.raises(ValueError, match=message):
        PolyClassifier(**{**tiny_kwargs, "device": device}).fit(X_OK, Y_OK)


@pytest.mark.parametrize("make_input, error, message", [
    (lambda: (pd.DataFrame([["a", "b", "t"]] * 4, columns=["text", "text", "task"]), Y_OK), ValueError,
     r"X has several columns named \['text'\]; keep one"),
    (lambda: (X_OK, [["pos", "neg"], ["spam"], ["ham"], ["pos"]]), ValueError, r"y\[0\] is a list|nested sequences"),
    (lambda: (X_OK, [[1, 2], [3], [4, 5, 6], [7]]), ValueError, r"y\[0\] is a list|nested sequences"),
])
def test_malformed_inputs_are_named(make_input, error, message, tiny_kwargs):
    X, y = make_input()
    with pytest.raises(error, match=message):
        PolyClassifier(**tiny_kwargs).fit(X, y)


def test_texts_longer_than_the_backbone_reads_are_cut_with_a_warning(tiny_kwargs):
    kwargs = {key: value for key, value in tiny_kwargs.items() if key != "max_length"}  # the default, 128
    X = [(LONG_TEXT, "a")] + X_OK[1:]
    with pytest.warns(UserWarning, match="max_length=128 is more than the 64 positions"):
        clf = PolyClassifier(**kwargs).fit(X, Y_OK)
    assert clf.predict([(LONG_TEXT + " w2", "a")]).shape == (1,)


def test_gpt2_prompts_longer_than_its_positions_leave_room_for_the_target():
    from _tiny import tiny_backbone
    from skillfit import PolySeq2Seq

    X = [(LONG_TEXT, "a"), ("w1 w2", "a"), ("w3", "b"), ("w4 w5", "b")]
    est = PolySeq2Seq(backbone=tiny_backbone("gpt2"), max_epochs=1, batch_size=4, random_state=0, rank=2,
                      max_length=32, max_target_length=8, max_new_tokens=4).fit(X, ["w1", "w2", "w3", "w4"])
    est.set_params(max_length=200)
    assert est.predict([(LONG_TEXT + " " + LONG_TEXT, "a")]).shape == (1,)


def test_adapt_with_labels_of_another_type(tiny_kwargs):
    clf = LoRAClassifier(**tiny_kwargs).fit(X_OK, Y_OK)
    with pytest.raises(TypeError, match="fitted with string labels; adapt\\(\\) got numeric labels"):
        clf.adapt([("new text", "c"), ("other text", "c")], [0, 1])


def test_integer_task_ids_on_a_string_task_model_are_refused_even_when_averaging(tiny_kwargs):
    clf = PolyClassifier(**tiny_kwargs, handle_unknown_task="average").fit(X_OK, Y_OK)
    with pytest.raises(TypeError, match="fitted with string task ids, but predict\\(\\) got integer ones"):
        clf.predict([("good movie", 3)])


def test_an_error_inside_adapt_changes_nothing(tiny_kwargs, monkeypatch):
    clf = PolyClassifier(**tiny_kwargs).fit(X_OK, Y_OK)
    before = clf.predict_proba(X_OK)
    tasks, classes = clf.tasks_.copy(), clf.classes_.copy()
    X_new, y_new = [("new text", "c"), ("other text", "c")], ["c:yes", "c:no"]

    def fail(mode):
        raise RuntimeError("injected")

    monkeypatch.setattr(clf, "_check_something_trains", fail)
    with pytest.raises(RuntimeError, match="injected"):
        clf.adapt(X_new, y_new)
    assert list(clf.tasks_) == list(tasks) and list(clf.classes_) == list(classes)
    np.testing.assert_array_equal(clf.predict_proba(X_OK), before)
    monkeypatch.undo()
    clf.adapt(X_new, y_new)  # a retry works
    assert list(clf.tasks_) == ["a", "b", "c"]


def test_pemt_descriptions_of_no_task_are_named(tiny_kwargs):
    from skillfit import PEMTClassifier

    with pytest.warns(UserWarning, match=r"describes task\(s\) \['bb'\] that X does not have"):
        PEMTClassifier(task_descriptions={"a": "movie reviews", "bb": "spam"}, **tiny_kwargs).fit(X_OK, Y_OK)


def test_infinite_learning_rate_is_refused():
    with pytest.raises(InvalidParameterError, match="'learning_rate' parameter .* Got inf"):
        PolyClassifier(learning_rate=float("inf")).fit(X_OK, Y_OK)


def test_a_diverging_fit_stops_and_keeps_the_previous_model(tiny_kwargs, monkeypatch):
    import torch

    clf = PolyClassifier(**tiny_kwargs).fit(X_OK, Y_OK)
    before = clf.predict_proba(X_OK)
    # A loss that diverges (learning rates are bounded at 1000, where these tiny fits stay finite).
    original = clf._batch_loss
    monkeypatch.setattr(clf, "_batch_loss", lambda batch: original(batch) * torch.tensor(float("inf")))
    clf.set_params(max_epochs=3)
    with pytest.raises(FloatingPointError, match="training loss became (nan|inf).*Lower learning_rate"):
        clf.fit(X_OK, Y_OK)
    np.testing.assert_array_equal(clf.predict_proba(X_OK), before)


def test_numpy_scalar_hyperparameters_save_and_load(tiny_kwargs, tmp_path):
    kwargs = {**tiny_kwargs, "rank": np.int64(4), "learning_rate": np.float64(1e-2), "batch_size": np.int32(16)}
    clf = CPolyClassifier(n_shared=np.int64(2), n_exclusive=np.int64(1), **kwargs).fit(X_OK, Y_OK)
    clf.save_pretrained(tmp_path / "model")
    loaded = CPolyClassifier.from_pretrained(tmp_path / "model")
    np.testing.assert_allclose(loaded.predict_proba(X_OK), clf.predict_proba(X_OK), atol=1e-6)


@pytest.fixture
def saved_folder(tiny_kwargs, tmp_path):
    clf = PolyClassifier(**tiny_kwargs).fit(X_OK, Y_OK)
    clf.save_pretrained(tmp_path / "model", include_backbone=True)
    return tmp_path / "model"


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _drop_network(path):
    import json

    config = json.loads(path.read_text())
    del config["network"]
    path.write_text(json.dumps(config))


@pytest.mark.parametrize("damage, error, message", [
    (lambda folder: _truncate(folder / "skillfit_model.safetensors"), OSError,
     r"skillfit_model.safetensors' cannot be read .*truncated or damaged"),
    (lambda folder: (folder / "skillfit_model.safetensors").unlink(), FileNotFoundError,
     r"skillfit_model.safetensors' is missing"),
    (lambda folder: _truncate(folder / "backbone" / "backbone.safetensors"), OSError,
     r"backbone.safetensors' cannot be read .*missing, truncated or damaged"),
    (lambda folder: (folder / "skillfit_config.json").write_text("{not json"), ValueError,
     r"skillfit_config.json' is not valid JSON"),
    (lambda folder: _drop_network(folder / "skillfit_config.json"), ValueError,
     r"skillfit_config.json' lacks the section\(s\) \['network'\]"),
])
def test_damaged_folders_name_the_file(saved_folder, damage, error, message):
    damage(saved_folder)
    with pytest.raises(error, match=message):
        PolyClassifier.from_pretrained(saved_folder)


def test_a_backbone_folder_without_a_tokenizer_is_refused(tiny_kwargs, tmp_path):
    import shutil

    folder = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_kwargs["backbone"], folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    with pytest.raises(ValueError, match="tokenizer of .* knows only 5 tokens.*holds no tokenizer files"):
        PolyClassifier(**{**tiny_kwargs, "backbone": str(folder)}).fit(X_OK, Y_OK)


CUSTOM_CODE = '''
import pathlib
pathlib.Path(__file__).with_name("code-ran").write_text("yes")
from transformers import BertConfig, BertModel


class CustomConfig(BertConfig):
    model_type = "custom-bert"


class CustomModel(BertModel):
    config_class = CustomConfig
'''


def test_checkpoint_code_never_runs_unless_allowed(tiny_kwargs, tmp_path):
    import json
    import shutil

    folder = tmp_path / "custom"
    shutil.copytree(tiny_kwargs["backbone"], folder)
    (folder / "custom.py").write_text(CUSTOM_CODE)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="custom-bert", auto_map={"AutoConfig": "custom.CustomConfig", "AutoModel": "custom.CustomModel"})
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="needs model code shipped with its checkpoint.*trust_remote_code=True"):
        PolyClassifier(**{**tiny_kwargs, "backbone": str(folder)}).fit(X_OK, Y_OK)
    assert not (folder / "code-ran").exists()


def test_a_checkpoint_dir_that_cannot_hold_files_is_refused_before_training(tiny_kwargs, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(ValueError, match=r"checkpoint_dir='.*file' is a file, not a folder"):
        PolyClassifier(**tiny_kwargs, checkpoint_dir=a_file).fit(X_OK, Y_OK)
    with pytest.raises(OSError, match=r"checkpoint_dir='.*file/sub' cannot be created .*pass a folder you can write"):
        PolyClassifier(**tiny_kwargs, checkpoint_dir=a_file / "sub").fit(X_OK, Y_OK)


# ------------------------------------------------------------------ the second audit (a probe of ~120 inputs)
X_WIDE = [("w1 apple w2", "a"), ("w3 w4 w5", "a"), ("banana w5", "b"), ("w6 w7 w9", "b")] * 3
Y_WIDE = ["pos", "neg", "spam", "ham"] * 3


@pytest.fixture(scope="module")
def fitted(bert_path):
    return PolyClassifier(backbone=bert_path, max_epochs=1, batch_size=8, random_state=0, rank=2, max_length=32,
                          device="cpu").fit(X_WIDE, Y_WIDE)


@pytest.mark.parametrize("call, error, message", [
    # Unordered X would pair texts with the wrong labels.
    (lambda est: est.fit(set(X_WIDE), Y_WIDE[:8]), TypeError, "got a set, whose rows have no order"),
    (lambda est: est.fit({"text": ["a"], "task": ["t"]}, ["x"]), TypeError, r"Pass pd.DataFrame\(X\)"),
    # Missing values of pandas, and texts that are missing rather than misplaced.
    (lambda est: est.fit([("a b", "a"), ("c d", pd.NA)] * 2, Y_OK), ValueError, r"Task ids are missing .* rows \[1"),
    (lambda est: est.fit(pd.DataFrame({"text": ["a b", None] * 2, "task": ["a", "b"] * 2}), Y_OK), ValueError,
     "Row 1 has no text"),
    (lambda est: est.fit(X_OK, Y_OK, X_val=X_OK, y_val=Y_OK[:3]), ValueError,
     "X_val and y_val have different lengths: X_val has 4 samples, y_val has 3"),
    # Validation rows may not give a task a label it never trains with (it would join the task's labels).
    (lambda est: est.fit(X_WIDE, Y_WIDE, X_val=[("w1", "a")], y_val=["spam"]), ValueError,
     r"y_val\[0\] gives task 'a' the label 'spam', which y never gives that task"),
    (lambda est: est.fit(X_OK, Y_OK, sample_weight=[1, 1, 1, 1]), TypeError, "Sample weights are not supported"),
    (lambda est: est.set_params(text_column="x", task_column="x").fit(X_OK, Y_OK), ValueError,
     "text_column and task_column are both 'x'"),
    (lambda est: est.set_params(checkpoint_dir="").fit(X_OK, Y_OK), ValueError, "checkpoint_dir is an empty path"),
    (lambda est: est.set_params(target_modules=["query", "nonexistent"]).fit(X_OK, Y_OK), ValueError,
     r"target_modules entries \['nonexistent'\] match no linear layer of BertModel"),
])
def test_second_audit_fit_inputs(call, error, message, tiny_kwargs):
    with pytest.raises(error, match=message):
        call(PolyClassifier(**tiny_kwargs))


@pytest.mark.parametrize("call, error, message", [
    # Parameters changed after fit are checked by every method, not only by fit.
    (lambda est: est.set_params(batch_size=0).predict(X_OK), InvalidParameterError, "'batch_size' parameter"),
    (lambda est: est.set_params(handle_unknown_task="avg").predict(X_OK), InvalidParameterError,
     "'handle_unknown_task' parameter"),
    (lambda est: est.set_params(learning_rate=-1.0).adapt([("w1", "new")] * 2, ["x", "y"]), InvalidParameterError,
     "'learning_rate' parameter"),
    (lambda est: est.set_params(warm_start=True, rank=4).fit(X_WIDE, Y_WIDE), ValueError,
     r"parameters that shape it changed \(rank: 2 at fit, 4 now\)"),
    (lambda est: est.score(X_OK, [0, 1, 2, 3]), TypeError, "fitted with string labels; score\\(\\) got numeric labels"),
    (lambda est: est.score(X_OK, Y_OK[:3]), ValueError, "X and y have different lengths: X has 4 samples, y has 3"),
    (lambda est: est.score(X_OK, Y_OK, sample_weight=[1, 2]), ValueError, "sample_weight has shape \\(2,\\)"),
    (lambda est: est.save_pretrained(__file__), ValueError, "is a file, not a folder"),
    (lambda est: est.save_pretrained("/tmp/skillfit-never-written", scores=[0.9]), TypeError, "scores must be a dict"),
])
def test_second_audit_fitted_model_calls(call, error, message, fitted):
    import copy

    estimator = copy.deepcopy(fitted)
    with pytest.raises(error, match=message):
        call(estimator)


def test_second_audit_warnings(tiny_kwargs):
    with pytest.warns(UserWarning, match="task id of its own .* is each pair \\(task, text\\)"):
        PolyClassifier(**tiny_kwargs).fit([(f"task{i}", f"some text {i}") for i in range(24)], ["a", "b"] * 12)
    with pytest.warns(UserWarning, match="checkpoint_every is set but checkpoint_dir is None"):
        PolyClassifier(**tiny_kwargs, checkpoint_every=5).fit(X_OK, Y_OK)


def test_boolean_labels_are_not_merged_into_integer_classes(tiny_kwargs):
    clf = PolyClassifier(**tiny_kwargs).fit(X_OK, [0, 1, 2, 3])
    with pytest.raises(TypeError, match="numpy would merge with them"):
        clf.adapt([("w1 w2", "new"), ("w3", "new")], [True, False])
