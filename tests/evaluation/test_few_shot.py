"""In-context evaluation (Brown et al. 2020): candidate log-likelihoods against float64 sums over
full passes, with and without the shared prefix's cache; prompts; the three multiple-choice
accuracies; task files (JSON lines and lm-evaluation-harness YAML); and in-context learning
itself, measured on models trained here."""

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax.data import few_shot as tasks
from attention_jax.data import tokenizers
from attention_jax.evaluation import few_shot
from attention_jax.models import gpt
from tests.models.test_gpt import CONFIG, random_params
from tests.tasks.test_language_model import train_small_gpt

KEYS, VALUES = [f"k{i}" for i in range(8)], [f"v{i}" for i in range(8)]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A WordPiece vocabulary in which every key, value and ";" is one token."""
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ";", *KEYS, *VALUES]))
    return tokenizers.WordPieceTokenizer(path, lowercase=True)


def reference_log_likelihood(model, params, prompt, continuation):
    """Σ_s log softmax(logits)[prompt + continuation] in float64 from one unpadded full pass."""
    logits_TV = np.asarray(model.apply({"params": params}, jnp.array([prompt + continuation]))[0])
    logits_TV = logits_TV.astype(np.float64)
    shifted_TV = logits_TV - logits_TV.max(-1, keepdims=True)
    logp_TV = shifted_TV - np.log(np.exp(shifted_TV).sum(-1, keepdims=True))
    return sum(logp_TV[len(prompt) - 1 + s, token] for s, token in enumerate(continuation))


@pytest.mark.parametrize("position", ["learned", "rope", "alibi"])
def test_log_likelihoods_with_and_without_prefix_reuse_equal_full_passes(position):
    config = dataclasses.replace(CONFIG, position=position, max_len=64)
    params, model = random_params(config, seed=11), gpt.GPT(config)
    rng = np.random.default_rng(12)
    prompts = [rng.integers(1, 23, n).tolist() for n in (5, 33, 1)]  # 33: a second bucket
    continuations = [
        [rng.integers(1, 23, n).tolist() for n in lengths] for lengths in ((1, 3), (2, 9, 4), (5,))
    ]
    expected = [
        [reference_log_likelihood(model, params, p, c) for c in cs]
        for p, cs in zip(prompts, continuations, strict=True)
    ]
    for reuse_prefix in (True, False):
        got = few_shot.log_likelihoods(
            model, params, prompts, continuations, batch_size=2, reuse_prefix=reuse_prefix
        )
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-4)


def cipher_task(seed, free_form=False):
    """A random key → value mapping over 4 keys, each asked 8 times: "k3 v5 ; k1 v2 ; k3" → "v5"."""
    rng = np.random.default_rng(seed)
    mapping, keys = rng.permutation(8), rng.choice(8, 4, replace=False)
    examples = tuple(
        few_shot.Example(f"k{k}", answer=f"v{mapping[k]}")
        if free_form
        else few_shot.Example(f"k{k}", tuple(VALUES), int(mapping[k]))
        for k in np.repeat(keys, 8)
    )
    return few_shot.Task("cipher", examples, fewshot_delimiter=" ; ", until=(" ",))


def test_prompts_hold_the_description_and_k_other_examples_drawn_by_seed():
    task = dataclasses.replace(cipher_task(0), description="Decode.")
    shots = task.shots(3, 4, seed=7)
    assert shots == task.shots(3, 4, seed=7) != task.shots(3, 4, seed=8)
    assert len(shots) == 4 and all(s.count(" ") == 1 for s in shots)
    others = [task.examples[j] for j in range(32) if j != 3]
    assert all(s in {f"{e.context} {task.target(e)}" for e in others} for s in shots)
    assert task.prompt(3, shots) == " ; ".join(["Decode.", *shots, task.examples[3].context])
    with pytest.raises(ValueError, match="40 shots but a pool of 31"):
        task.shots(0, 40, seed=0)


def test_accuracies_follow_their_definitions(tokenizer):
    config = dataclasses.replace(CONFIG, vocab_size=tokenizer.vocab_size, max_len=64)
    params, model = random_params(config, seed=13), gpt.GPT(config)
    examples = tuple(
        few_shot.Example(f"k{i} ; k{i + 1}", ("v1", "v2 v3", "v4 ; v5 v6"), i % 3) for i in range(4)
    )
    task = few_shot.Task("t", examples, answer_context="k0")
    got = few_shot.evaluate(task, model, params, tokenizer, k=2, seed=1, batch_size=4)

    cls, encode = tokenizer.cls_id, tokenizer.encode
    picks = {"acc": [], "acc_per_token": [], "acc_unconditional": []}
    for i, e in enumerate(examples):
        prompt = [cls, *encode(task.prompt(i, task.shots(i, 2, seed=1)))]
        conditional = [
            reference_log_likelihood(model, params, prompt, encode(c)) for c in e.choices
        ]
        unconditional = [
            reference_log_likelihood(model, params, [cls, *encode("k0")], encode(c))
            for c in e.choices
        ]
        lengths = [len(encode(c)) for c in e.choices]
        picks["acc"].append(np.argmax(conditional) == e.gold)
        picks["acc_per_token"].append(np.argmax(np.divide(conditional, lengths)) == e.gold)
        picks["acc_unconditional"].append(
            np.argmax(np.subtract(conditional, unconditional)) == e.gold
        )
    assert got["shots"] == 2 and got["examples"] == 4
    for name, correct in picks.items():
        assert got[name] == pytest.approx(np.mean(correct)), name


def test_shots_that_overflow_the_context_are_dropped(tokenizer):
    config = dataclasses.replace(CONFIG, vocab_size=tokenizer.vocab_size, max_len=12)
    params, model = random_params(config), gpt.GPT(config)
    # [CLS], 4 shots "k v" and 4 ";" before the query "k", and a 1-token candidate: 15 > 12
    # tokens; without the last shot, 12.
    got = few_shot.evaluate(cipher_task(1), model, params, tokenizer, k=4)
    assert got["shots"] == 3


def test_task_files_round_trip_and_bad_files_are_one_line_errors(tmp_path):
    task = dataclasses.replace(cipher_task(2), description="Decode.", pool=cipher_task(3).examples)
    tasks.save(task, tmp_path / "cipher.jsonl")
    assert few_shot.load_task(tmp_path / "cipher.jsonl") == task
    free_form = cipher_task(2, free_form=True)
    tasks.save(free_form, tmp_path / "free.jsonl")
    assert few_shot.load_task(tmp_path / "free.jsonl") == dataclasses.replace(
        free_form, name="cipher"
    )

    bad = {
        "not JSON": '{"context": "a", "answer": "b"}\n{oops\n',
        "needs a 'context'": '{"context": "a", "answer": "b"}\n{"question": "a"}\n',
        "mixes multiple-choice and free-form": '{"context": "a", "answer": "b"}\n'
        '{"context": "a", "choices": ["b", "c"], "gold": 0}\n',
        "needs ≥ 2 choices and a gold": '{"context": "a", "choices": ["b", "c"], "gold": 2}\n',
        "unknown task fields": '{"descripton": "x"}\n{"context": "a", "answer": "b"}\n',
        "has no examples": '{"description": "x"}\n',
    }
    for message, text in bad.items():
        (tmp_path / "bad.jsonl").write_text(text)
        with pytest.raises(ValueError, match=message):
            few_shot.load_task(tmp_path / "bad.jsonl")
    with pytest.raises(ValueError, match="does not exist"):
        few_shot.load_task(tmp_path / "missing.jsonl")


def write_harness_task(tmp_path, spec: str, docs: dict[str, list[dict]]):
    for split, rows in docs.items():
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "task.yaml").write_text(spec)
    return tmp_path / "task.yaml"


HARNESS_SPEC = """\
task: capitals
dataset_path: json
dataset_kwargs:
  data_files: {train: train.jsonl, test: test.jsonl}
test_split: test
fewshot_split: train
output_type: multiple_choice
description: "Capitals."
doc_to_text: "Q: What is the capital of {{country}}?\\nA:"
doc_to_choice: "{{options}}"
doc_to_target: label
metric_list:
  - metric: acc
"""


def test_harness_yaml_tasks_are_read_where_simple(tmp_path):
    docs = {
        split: [{"country": c, "options": ["Paris", "Rome"], "label": i} for i, c in enumerate(cs)]
        for split, cs in (("train", ["France", "Italy"]), ("test", ["Gaul", "Latium"]))
    }
    task = few_shot.load_task(write_harness_task(tmp_path, HARNESS_SPEC, docs))
    assert task.name == "capitals" and task.description == "Capitals."
    assert task.examples[1] == few_shot.Example(
        "Q: What is the capital of Latium?\nA:", ("Paris", "Rome"), 1
    )
    assert [e.context.split()[-2] for e in task.pool] == ["France?", "Italy?"]

    generate = HARNESS_SPEC.replace("multiple_choice", "generate_until").replace(
        "doc_to_target: label",
        "doc_to_target: '{{options[label]}}'\ngeneration_kwargs: {until: ['.']}",
    )
    task = few_shot.load_task(write_harness_task(tmp_path, generate, docs))
    assert task.examples[0].answer == "Paris" and task.until == (".",)

    for message, spec in {
        "not a simple task YAML": HARNESS_SPEC + "process_results: !function utils.process\n",
        "only dataset_path: json": HARNESS_SPEC.replace("dataset_path: json", "dataset_path: glue"),
        "output_type 'loglikelihood'": HARNESS_SPEC.replace("multiple_choice", "loglikelihood"),
        "missing.jsonl does not exist": HARNESS_SPEC.replace(
            "test: test.jsonl", "test: missing.jsonl"
        ),
        "access to attribute '__class__'": HARNESS_SPEC.replace(
            "{{country}}", "{{ country.__class__.__mro__ }}"
        ),
    }.items():
        with pytest.raises(ValueError, match=message):
            few_shot.load_task(write_harness_task(tmp_path, spec, docs))


def train_on_labels(tokenizer, *, fresh_labels_per_sequence: bool, steps: int = 200):
    """A 2-block GPT trained on rows "[CLS] k v ; k v ; …" of 12 random keys, each followed by its
    class's label: keys k0–k3 by one of v0–v3, k4–k7 by one of v4–v7. The two labels are drawn
    afresh for every row (only the row's earlier examples tell them: in-context learning pays)
    or fixed at v0 and v4 for every row (memorised; the context tells nothing new)."""
    rng = np.random.default_rng(0)

    def batch(n):
        rows = []
        for _ in range(n):
            labels = (rng.integers(4), 4 + rng.integers(4)) if fresh_labels_per_sequence else (0, 4)
            text = " ; ".join(f"k{k} v{labels[k // 4]}" for k in rng.integers(0, 8, 12))
            rows.append([tokenizer.cls_id, *tokenizer.encode(text)])
        ids = np.array(rows, np.int32)
        ones = np.ones_like(ids[:, 1:])
        return dict(
            inputs=ids[:, :-1], targets=ids[:, 1:], segment_ids=ones, positions=ones.cumsum(1) - 1
        )

    batches = (batch(32) for _ in range(steps))
    task, params = train_small_gpt(tokenizer.vocab_size, batches, steps, max_len=64)
    return task.model, params


def labelling_task(labels, free_form=False):
    """Every key asked 4 times under one labelling the model has not memorised: k0–k3 → v{a},
    k4–k7 → v{b}, candidates all eight labels (or free-form)."""
    examples = []
    for k in np.repeat(np.arange(8), 4):
        gold = labels[k // 4]
        examples.append(
            few_shot.Example(f"k{k}", answer=f"v{gold}")
            if free_form
            else few_shot.Example(f"k{k}", tuple(VALUES), int(gold))
        )
    return few_shot.Task("labels", tuple(examples), fewshot_delimiter=" ; ", until=(" ",))


def test_in_context_learning_is_measured_not_assumed(tokenizer):
    labellings = [(1, 5), (2, 7), (3, 6)]  # neither v0 nor v4: new to the fixed-label model

    def mean_accuracy(model, params, k, free_form=False):
        metric = "exact_match" if free_form else "acc"
        return np.mean(
            [
                few_shot.evaluate(
                    labelling_task(labels, free_form), model, params, tokenizer, k=k, seed=k
                )[metric]
                for labels in labellings
            ]
        )

    learner = train_on_labels(tokenizer, fresh_labels_per_sequence=True)
    zero, four = mean_accuracy(*learner, 0), mean_accuracy(*learner, 4)
    assert four > zero + 0.4 and four > 0.8, (zero, four)
    assert mean_accuracy(*learner, 4, free_form=True) > 0.8

    memoriser = train_on_labels(tokenizer, fresh_labels_per_sequence=False)
    zero, four = mean_accuracy(*memoriser, 0), mean_accuracy(*memoriser, 4)
    assert four < zero + 0.1 and four < 0.3, (zero, four)
