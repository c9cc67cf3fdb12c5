"""Text-to-text estimators on tiny T5, BART, GPT-2 and Llama backbones built offline."""

import pickle

import numpy as np
import pytest
import torch

from _tiny import FILLER, KEYWORDS, tiny_backbone
from skillfit import CPolySeq2Seq, LoRASeq2Seq, MTLoRASeq2Seq, PEMTSeq2Seq, PolySeq2Seq
from skillfit.metrics import exact_match_score, rouge_l, rouge_l_score, rouge_tokens

CYCLE = KEYWORDS[:4]


def keyword_tasks(n, seed):
    """Two deterministic tasks over the same texts: name the keyword, or name the next one in a cycle."""
    rng = np.random.default_rng(seed)
    X, y = [], []
    for i in range(n):
        k = int(rng.integers(4))
        words = list(rng.choice(FILLER, size=4))
        words.insert(int(rng.integers(5)), CYCLE[k])
        task = "next" if i % 2 else "name"
        X.append((" ".join(words), task))
        y.append(CYCLE[(k + 1) % 4] if task == "next" else CYCLE[k])
    return X, y


FAST = dict(max_epochs=1, batch_size=8, random_state=0, rank=2, max_new_tokens=3)


@pytest.mark.parametrize("kind", ["t5", "bart", "gpt2", "llama"])
def test_each_backbone_kind_fits_predicts_and_round_trips(kind):
    X, y = keyword_tasks(24, seed=0)
    est = PolySeq2Seq(n_skills=2, backbone=tiny_backbone(kind), **FAST).fit(X, y)
    assert est.decoder_only_ == (kind in ("gpt2", "llama"))
    predictions = est.predict(X[:6])
    assert predictions.shape == (6,) and all(isinstance(text, str) for text in predictions)
    restored = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(restored.predict(X[:6]), predictions)
    assert 0.0 <= est.score(X[:6], y[:6]) <= 1.0


@pytest.mark.slow
def test_a_tiny_model_learns_a_deterministic_multitask_mapping():
    X, y = keyword_tasks(400, seed=0)
    X_test, y_test = keyword_tasks(80, seed=1)
    est = PolySeq2Seq(
        n_skills=2, backbone=tiny_backbone("t5"), max_epochs=12, learning_rate=1e-2, rank=8,
        target_modules="all-linear", batch_size=16, random_state=0, max_new_tokens=3, scoring="exact_match",
    ).fit(X, y)
    # The same texts map to different words by task; chance is 0.25.
    assert est.score(X_test, y_test) >= 0.9
    by_task = {task: [t for t, (_, k) in zip(y_test, X_test) if k == task] for task in ("name", "next")}
    assert by_task["name"] != by_task["next"]


@pytest.mark.slow
def test_beam_search_keeps_each_examples_task():
    X, y = keyword_tasks(200, seed=0)
    est = CPolySeq2Seq(
        n_shared=2, n_exclusive=1, backbone=tiny_backbone("t5"), max_epochs=4, learning_rate=1e-2, rank=4,
        target_modules="all-linear", batch_size=16, random_state=0, max_new_tokens=4, num_beams=3,
    ).fit(X, y)
    mixed = [X[0], X[1], X[2], X[3], X[1]]
    assert len({task for _, task in mixed}) == 2
    together = est.set_params(batch_size=8).predict(mixed)
    alone = [est.predict([row])[0] for row in mixed]
    assert together.tolist() == alone


def test_causal_lm_loss_reads_only_the_target_tokens():
    X, y = keyword_tasks(8, seed=0)
    est = LoRASeq2Seq(backbone=tiny_backbone("gpt2"), **FAST).fit(X, y)
    encoded = est._encode([text for text, _ in X], est._task_indices(np.asarray([t for _, t in X], dtype=object)), y)
    batch = est._make_batch(np.arange(len(X)), encoded)
    labels = batch["labels"]
    prompt_lengths = [len(est.tokenizer_(text)["input_ids"]) for text, _ in X]
    for row, length in enumerate(prompt_lengths):
        assert torch.all(labels[row, :length] == -100)
        target = labels[row, length:][labels[row, length:] != -100]
        assert target[-1].item() == est.tokenizer_.eos_token_id
        assert est.tokenizer_.decode(target[:-1]).strip() == y[row]
    est.network_.eval()
    with torch.no_grad():
        loss = est._batch_loss(batch)
        # Changing the prompt tokens' labels to anything ignored changes nothing...
        relabelled = dict(batch, labels=torch.where(labels == -100, torch.full_like(labels, -100), labels))
        assert torch.equal(est._batch_loss(relabelled), loss)
        # ...and the loss equals the cross-entropy over the target tokens alone.
        with est.network_.context.tasks(batch["tasks"]):
            logits = est.network_.backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        shifted_logits, shifted_labels = logits[:, :-1], labels[:, 1:]
        manual = torch.nn.functional.cross_entropy(shifted_logits.reshape(-1, logits.shape[-1]), shifted_labels.reshape(-1), ignore_index=-100)
        torch.testing.assert_close(loss, manual)
        full = torch.nn.functional.cross_entropy(
            shifted_logits.reshape(-1, logits.shape[-1]), torch.where(batch["attention_mask"][:, 1:] == 1, batch["input_ids"][:, 1:], -100).reshape(-1),
            ignore_index=-100,
        )
        assert not torch.allclose(loss, full), "a loss over prompt tokens too would differ"


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda **kw: CPolySeq2Seq(n_shared=2, n_exclusive=1, **kw), id="cpoly"),
        pytest.param(lambda **kw: LoRASeq2Seq(sharing="private", **kw), id="lora-private"),
        pytest.param(lambda **kw: MTLoRASeq2Seq(n_task_layers=1, **kw), id="mtlora"),
        pytest.param(lambda **kw: PEMTSeq2Seq(**kw), id="pemt"),
    ],
)
@pytest.mark.parametrize("kind", ["t5", "llama"])
def test_every_method_on_both_backbone_kinds_with_adapt(make, kind):
    X, y = keyword_tasks(24, seed=0)
    est = make(backbone=tiny_backbone(kind), **FAST).fit(X, y)
    before = est.predict(X[:6])
    X_new = [(text, "third") for text, _ in X[:8]]
    est.adapt(X_new, y[:8], mode="routing", max_epochs=1)
    np.testing.assert_array_equal(est.predict(X[:6]), before)
    assert est.predict(X_new[:2]).shape == (2,)


def test_mtlora_seq2seq_has_task_layers_in_encoder_and_decoder():
    from skillfit.skills import skill_layers

    X, y = keyword_tasks(16, seed=0)
    est = MTLoRASeq2Seq(n_task_layers=1, backbone=tiny_backbone("t5"), **FAST).fit(X, y)
    with_task = {name.split(".")[1] for name, layer in skill_layers(est.network_) if layer.exclusive_A is not None}
    assert with_task == {"encoder", "decoder"}


# ----------------------------------------------------------------------------- ROUGE
# Reference values from rouge-score 0.1.2 (RougeScorer(["rougeL"], use_stemmer=False)).
ROUGE_REFERENCE = [
    ("the cat sat on the mat", "the cat is on the mat", 0.833333333333),
    ("Paris!", "paris", 1.0),
    ("a b c d e", "e d c b a", 0.2),
    ("", "something", 0.0),
    ("New York City, NY", "new-york city", 0.857142857143),
    ("police killed the gunman", "the gunman police killed", 0.5),
    ("Café au lait 42", "cafe au lait 42", 0.75),
    ("x y z", "a b c", 0.0),
    ("It's 3:15 pm.", "it s 3 15 pm", 1.0),
    ("one two three four", "one three", 0.666666666667),
]


@pytest.mark.parametrize("prediction, reference, expected", ROUGE_REFERENCE)
def test_rouge_l_matches_rouge_score(prediction, reference, expected):
    assert rouge_l(prediction, reference) == pytest.approx(expected, abs=1e-9)


def test_rouge_against_the_package_when_installed():
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rng = np.random.default_rng(0)
    vocabulary = ["the", "a", "cat", "dog", "Sat", "on", "mat,", "42", "x-y", "é"]
    for _ in range(200):
        prediction = " ".join(rng.choice(vocabulary, size=int(rng.integers(0, 8))))
        reference = " ".join(rng.choice(vocabulary, size=int(rng.integers(1, 8))))
        assert rouge_l(prediction, reference) == pytest.approx(scorer.score(reference, prediction)["rougeL"].fmeasure, abs=1e-12)


def test_metric_helpers():
    assert rouge_tokens("Hello, World! 2x") == ["hello", "world", "2x"]
    assert rouge_l_score(["a b", "c"], ["a b", "d"]) == pytest.approx(0.5)
    assert exact_match_score(["yes ", "no"], [" yes", "yes"]) == 0.5
    with pytest.raises(ValueError, match="different lengths"):
        rouge_l_score(["a"], ["a", "b"])
    with pytest.raises(TypeError, match="must be str"):
        exact_match_score([1], ["1"])


# ------------------------------------------------------------------------ bad input
def test_seq2seq_bad_targets():
    X = [("w1 apple", "a"), ("w2 banana", "b")]
    est = PolySeq2Seq(backbone=tiny_backbone("t5"), **FAST)
    with pytest.raises(TypeError, match=r"Every target must be a str; position 1 holds int 3"):
        est.fit(X, ["apple", 3])
    with pytest.raises(ValueError, match="Target 0 is empty"):
        est.fit(X, ["  ", "banana"])
    with pytest.raises(ValueError, match="X has 2 samples, y has 1"):
        est.fit(X, ["apple"])


def test_classifier_only_backbone_is_refused_with_a_fitting_class_named():
    with pytest.raises(ValueError, match=r"encoder-only model \(bert\) and cannot generate text.*AutoModelForSeq2SeqLM.*AutoModelForCausalLM"):
        PolySeq2Seq(backbone=tiny_backbone("bert"), **FAST).fit([("w1", "a"), ("w2", "b")], ["x", "y"])


def test_encoder_decoder_pair_backbone(tmp_path):
    import transformers

    bert = tiny_backbone("bert")
    pair = transformers.EncoderDecoderModel.from_encoder_decoder_pretrained(bert, bert)
    for config in (pair.config, pair.generation_config):
        config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 2, 0, 4
    pair.save_pretrained(tmp_path)
    transformers.AutoTokenizer.from_pretrained(bert).save_pretrained(tmp_path)
    X, y = keyword_tasks(16, seed=0)
    est = PolySeq2Seq(n_skills=2, backbone=str(tmp_path), **FAST).fit(X, y)
    assert not est.decoder_only_ and est.predict(X[:2]).shape == (2,)


def test_sampling_repeats_with_random_state_and_leaves_global_rng_alone():
    X, y = keyword_tasks(16, seed=0)
    est = PolySeq2Seq(n_skills=2, backbone=tiny_backbone("gpt2"), **FAST).fit(X, y)
    est.set_params(do_sample=True, max_new_tokens=4)
    state = torch.get_rng_state()
    first, second = est.predict(X[:6]), est.predict(X[:6])
    np.testing.assert_array_equal(first, second)
    assert torch.equal(torch.get_rng_state(), state)
    others = [est.set_params(random_state=seed).predict(X[:6]).tolist() for seed in (1, 2, 3)]
    assert any(other != first.tolist() for other in others), "different seeds should sample differently"
