"""export_peft: the written adapters, loaded by peft on the bare backbone, reproduce the estimators."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM

from _tiny import tiny_backbone
from skillfit import (
    CPolyClassifier,
    CPolySeq2Seq,
    LoRAClassifier,
    MTLoRAClassifier,
    PEMTClassifier,
    PolyClassifier,
    PolySeq2Seq,
)
from skillfit.estimators._networks import pool_hidden_states
from test_seq2seq import FAST, keyword_tasks

peft = pytest.importorskip("peft")
safetensors_torch = pytest.importorskip("safetensors.torch")

# A learning rate that moves the skills well away from zero in two epochs.
TRAIN = dict(max_epochs=2, batch_size=16, random_state=0, rank=4, max_length=32, learning_rate=2e-2)


def head_probabilities(folder, hidden, attention_mask):
    head = safetensors_torch.load_file(str(folder / "skillfit_head.safetensors"))
    info = json.loads((folder / "skillfit_head.json").read_text())
    pooled = pool_hidden_states(hidden, attention_mask, info["pooling"])
    return pooled.double() @ head["weight"].double().T + head["bias"].double(), info


CLASSIFIERS = {
    "cpoly": (lambda: CPolyClassifier(n_shared=3, n_exclusive=1, **TRAIN), "bert"),
    "cpoly-output-splits": (lambda: CPolyClassifier(n_shared=2, n_exclusive=2, combine="output", n_splits=2, **TRAIN), "bert"),
    "mtlora": (lambda: MTLoRAClassifier(n_task_layers=1, **TRAIN), "bert"),
    "lora-private": (lambda: LoRAClassifier(sharing="private", **TRAIN), "bert"),
    "poly-t5-encoder": (lambda: PolyClassifier(n_skills=2, **TRAIN), "t5"),
}


@pytest.mark.slow
@pytest.mark.parametrize("make, kind", CLASSIFIERS.values(), ids=CLASSIFIERS.keys())
def test_lora_export_reproduces_a_tasks_probabilities(make, kind, multitask, tmp_path):
    X, y = multitask
    clf = make().set_params(backbone=tiny_backbone(kind)).fit(X, y)
    task = "beta"
    clf.export_peft(tmp_path, task=task)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    rows = [x for x in X if x[1] == task][:24]
    encoding = clf.tokenizer_([text for text, _ in rows], return_tensors="pt", padding=True, truncation=True, max_length=32)
    bare = AutoModel.from_pretrained(tiny_backbone(kind)).eval()
    adapted = peft.PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_backbone(kind)), str(tmp_path)).eval()
    with torch.no_grad():
        encoders = [model.get_encoder() if kind == "t5" else model for model in (bare, adapted)]
        states = [encoder(input_ids=encoding["input_ids"], attention_mask=encoding["attention_mask"]).last_hidden_state for encoder in encoders]
    assert (states[0] - states[1]).abs().max() > 1e-2, "the adapter must change the backbone for the test to mean anything"
    logits, info = head_probabilities(tmp_path, states[1], encoding["attention_mask"])
    probabilities = torch.softmax(logits, dim=-1).numpy()
    columns = [clf.classes_.tolist().index(label) for label in info["labels"]["__ndarray__"]]
    np.testing.assert_allclose(probabilities, clf.predict_proba(rows)[:, columns], atol=1e-5)


@pytest.mark.slow
def test_mtlora_export_writes_per_layer_ranks(multitask, tmp_path):
    X, y = multitask
    clf = MTLoRAClassifier(n_task_layers=1, task_rank=2, **TRAIN).set_params(backbone=tiny_backbone("bert")).fit(X, y)
    clf.export_peft(tmp_path, task="alpha")
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["r"] == 4 and set(config["rank_pattern"].values()) == {6}
    assert config["rank_pattern"] == config["alpha_pattern"]
    assert all(".layer.1." in name for name in config["rank_pattern"])


@pytest.mark.slow
def test_a_task_adapted_with_poly_mu_exports(multitask, tmp_path):
    X, y = multitask
    clf = PolyClassifier(n_skills=3, **TRAIN).set_params(backbone=tiny_backbone("bert")).fit(X, y)
    X_new = [(text, "delta") for text, _ in X[:32]]
    clf.adapt(X_new, ["delta:up" if i % 2 else "delta:down" for i in range(32)], mode="average", max_epochs=2)
    clf.export_peft(tmp_path, task="delta")
    adapted = peft.PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_backbone("bert")), str(tmp_path)).eval()
    encoding = clf.tokenizer_([text for text, _ in X_new[:8]], return_tensors="pt", padding=True)
    with torch.no_grad():
        hidden = adapted(**{k: encoding[k] for k in ("input_ids", "attention_mask")}).last_hidden_state
    logits, info = head_probabilities(tmp_path, hidden, encoding["attention_mask"])
    columns = [clf.classes_.tolist().index(label) for label in info["labels"]["__ndarray__"]]
    np.testing.assert_allclose(torch.softmax(logits, -1).numpy(), clf.predict_proba(X_new[:8])[:, columns], atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("n_splits", [1, 2])
def test_poly_export_reproduces_every_task(n_splits, multitask, tmp_path):
    X, y = multitask
    clf = PolyClassifier(n_skills=3, n_splits=n_splits, **TRAIN).set_params(backbone=tiny_backbone("bert")).fit(X, y)
    clf.export_peft(tmp_path, format="poly")
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert (config["peft_type"], config["n_tasks"], config["n_skills"], config["n_splits"]) == ("POLY", 3, 3, n_splits)
    adapted = peft.PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_backbone("bert")), str(tmp_path)).eval()
    rows = X[:40]
    encoding = clf.tokenizer_([text for text, _ in rows], return_tensors="pt", padding=True)
    task_ids = torch.tensor([clf.tasks_.tolist().index(task) for _, task in rows])
    with torch.no_grad():
        hidden = adapted.base_model(input_ids=encoding["input_ids"], attention_mask=encoding["attention_mask"], task_ids=task_ids).last_hidden_state
    logits, info = head_probabilities(tmp_path, hidden, encoding["attention_mask"])
    allowed = torch.tensor(info["label_mask"])[task_ids]
    probabilities = torch.softmax(logits.masked_fill(~allowed, float("-inf")), -1).numpy()
    np.testing.assert_allclose(probabilities, clf.predict_proba(rows), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("kind, model_class", [("t5", AutoModelForSeq2SeqLM), ("gpt2", AutoModelForCausalLM)])
def test_seq2seq_lora_export_reproduces_generation(kind, model_class, tmp_path):
    X, y = keyword_tasks(64, seed=0)
    est = CPolySeq2Seq(n_shared=2, **{**FAST, "max_epochs": 3, "learning_rate": 2e-2}, backbone=tiny_backbone(kind)).fit(X, y)
    est.export_peft(tmp_path, task="next")
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["task_type"] == ("SEQ_2_SEQ_LM" if kind == "t5" else "CAUSAL_LM")
    assert config["fan_in_fan_out"] == (kind == "gpt2")  # GPT-2's Conv1D
    adapted = peft.PeftModel.from_pretrained(model_class.from_pretrained(tiny_backbone(kind)), str(tmp_path)).eval()
    rows = [x for x in X if x[1] == "next"][:6]
    tokenizer = est.tokenizer_
    expected_texts = []
    for text, _ in rows:
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        settings = dict(max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        with torch.no_grad():
            generated = adapted.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **settings)
        if kind == "gpt2":
            generated = generated[:, ids.shape[1]:]
        expected_texts.append(tokenizer.decode(generated[0], skip_special_tokens=True).strip())
    np.testing.assert_array_equal(est.predict(rows), expected_texts)
    # Token-level check: the adapted model's logits equal the estimator's network's.
    ids = tokenizer(rows[0][0], return_tensors="pt")["input_ids"]
    decoder = {"decoder_input_ids": torch.zeros((1, 1), dtype=torch.long)} if kind == "t5" else {}
    with torch.no_grad():
        theirs = adapted(input_ids=ids, **decoder).logits
        with est.network_.context.tasks(torch.tensor([est.tasks_.tolist().index("next")])):
            ours = est.network_.backbone(input_ids=ids, **decoder).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_export_errors(multitask, tmp_path):
    X, y = multitask
    fast = dict(TRAIN, max_epochs=1, backbone=tiny_backbone("bert"))
    cpoly = CPolyClassifier(**fast).fit(X, y)
    with pytest.raises(ValueError, match=r"writes one task's adapter; pass task= one of \['alpha', 'beta', 'gamma'\]"):
        cpoly.export_peft(tmp_path)
    with pytest.raises(ValueError, match="task='omega' is not a fitted task"):
        cpoly.export_peft(tmp_path, task="omega")
    with pytest.raises(ValueError, match="holds routed shared skills only.*format='lora' with task="):
        cpoly.export_peft(tmp_path, format="poly")
    with pytest.raises(ValueError, match="format must be one of"):
        cpoly.export_peft(tmp_path, task="alpha", format="ia3")
    with pytest.raises(ValueError, match="format='poly' holds every task; leave task= unset"):
        PolyClassifier(**fast).fit(X, y).export_peft(tmp_path, task="alpha", format="poly")
    with pytest.raises(ValueError, match="task-description token.*cannot hold"):
        PEMTClassifier(**fast).fit(X, y).export_peft(tmp_path, task="alpha")
    with pytest.raises(Exception, match="not fitted"):
        PolySeq2Seq().export_peft(tmp_path)
