"""The SASE task: the loss (cross-entropy + coefficient · penalty) and the hop overlap against
NumPy; short trainings where the penalty must lower the hops' overlap, where the gated pair
encoder must learn a toy entailment, and on a slice of SST-2, which must beat the majority
class; the attention heatmaps and the highlighted text are written and name the tokens.

B batch, S tokens, R hops.
"""

import pathlib

import numpy as np
import pytest
import tensorboardX

from attention_jax import training
from attention_jax.data import sase as sase_data
from attention_jax.tasks import sase
from tests.models.test_transformer import random_params

SST2 = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / "sst2" / "train.tsv"


def numpy_overlap(a_RS):
    R = len(a_RS)
    pairs = [(r, q) for r in range(R) for q in range(R) if r != q]
    return np.mean([np.minimum(a_RS[r], a_RS[q]).sum() for r, q in pairs])


def test_hop_overlap_and_loss_match_numpy():
    rng = np.random.default_rng(0)
    a_BRS = rng.dirichlet(np.ones(5), size=(3, 4)).astype(np.float32)
    expected = [numpy_overlap(a) for a in a_BRS]
    np.testing.assert_allclose(sase.hop_overlap(a_BRS), expected, rtol=1e-5)
    same, disjoint = np.tile(a_BRS[:1, :1], (1, 4, 1)), np.eye(4, 5)[None].astype(np.float32)
    np.testing.assert_allclose(sase.hop_overlap(same), [1.0], rtol=1e-5)
    np.testing.assert_allclose(sase.hop_overlap(disjoint), [0.0], atol=1e-7)

    task = sase.create("tiny", 20, training.default_config(), penalty_coefficient=0.3)
    batch = {
        "tokens": np.array([[3, 4, 5, 0], [6, 7, 0, 0]], np.int32),
        "label": np.array([1, 0], np.int32),
        "weight": np.array([1.0, 0.0], np.float32),  # the second row is padding
    }
    params = random_params(task.model, batch["tokens"], std=0.5)
    loss, metrics = task.loss(params, batch, None, train=False)
    logits_BC, a_BRS = task.apply(params, batch, return_weights=True)
    logits_C, a_RS = np.asarray(logits_BC[0], np.float64), np.asarray(a_BRS[0, :, :3], np.float64)
    nll = np.log(np.exp(logits_C).sum()) - logits_C[1]
    penalty = np.sum(np.square(a_RS @ a_RS.T - np.eye(len(a_RS))))
    np.testing.assert_allclose(loss, nll + 0.3 * penalty, rtol=1e-5)
    np.testing.assert_allclose(metrics["hop_overlap"][0], numpy_overlap(a_RS), rtol=1e-5)
    assert metrics["accuracy"][1] == 1.0


def train(task, rows, labels_Z, steps, workdir, *, batch_size=32, learning_rate=3e-3):
    config = training.default_config()
    config.update(
        workdir=str(workdir),
        num_train_steps=steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        eval_every_steps=0,
        checkpoint_every_steps=0,
        progress_bar=False,
        log_every_steps=steps,
    )
    batches = sase_data.SentenceBatches(rows, labels_Z, batch_size, seed=0)
    return training.train(config, task, batches).params


def batches(rows, labels_Z):
    return sase_data.SentenceBatches(rows, labels_Z, 64, shuffle=False)


def test_penalty_lowers_hop_overlap(tmp_path):
    """One token of each sentence decides its label: without the penalty every hop finds it."""
    rng = np.random.default_rng(0)
    rows, labels = [], []
    for _ in range(512):
        tokens = list(rng.integers(4, 30, size=8))
        label = int(rng.integers(2))
        tokens[rng.integers(8)] = 2 + label  # token 2 or 3 is the label
        rows.append([tokens])
        labels.append(label)
    overlaps = {}
    for coefficient in (0.0, 1.0):
        task = sase.create("tiny", 30, training.default_config(), penalty_coefficient=coefficient)
        params = train(task, rows, labels, 120, tmp_path / str(coefficient))
        metrics = task.evaluate(params, batches(rows[:256], labels[:256]))
        assert metrics["accuracy"] > 0.95
        overlaps[coefficient] = metrics["hop_overlap"]
    assert overlaps[0.0] > 0.5 and overlaps[1.0] < overlaps[0.0] - 0.3, overlaps


def test_gated_pair_encoder_learns_a_toy_entailment(tmp_path):
    """Premise: 2 tokens; hypothesis: 1 token; entailed when the premise contains it."""
    rng = np.random.default_rng(1)
    rows, labels = [], []
    for _ in range(1024):
        premise = list(rng.choice(np.arange(1, 7), size=2, replace=False))
        entailed = int(rng.integers(2))
        others = [t for t in range(1, 7) if t not in premise]
        rows.append([premise, [int(rng.choice(premise if entailed else others))]])
        labels.append(entailed)
    task = sase.create("tiny", 7, training.default_config(), overrides={"pair": True})
    params = train(task, rows, labels, 400, tmp_path, learning_rate=1e-2)
    metrics = task.evaluate(params, batches(rows[:512], labels[:512]))
    assert metrics["accuracy"] > 0.9, metrics


@pytest.mark.skipif(not SST2.is_file(), reason="needs ../shared/data/sst2/train.tsv")
def test_short_run_on_a_slice_of_sst2_beats_the_majority_class(tmp_path):
    d = dict(
        dataset="sst2",
        train_file=str(SST2),
        data_dir=None,
        validation_size=300,
        seed=0,
        train_rows=4000,
        min_count=1,
        max_len=40,
    )
    data = sase.prepare(_Config(d), "random")
    task = sase.create(
        "tiny", data.vocab_size, training.default_config(), overrides={"embed_size": 32}
    )
    params = train(task, data.train_rows, data.train_labels_Z, 200, tmp_path, batch_size=64)
    accuracy = task.evaluate(params, batches(data.eval_rows, data.eval_labels_Z))["accuracy"]
    majority = max(data.eval_labels_Z.mean(), 1 - data.eval_labels_Z.mean())
    assert accuracy > majority + 0.08, (accuracy, majority)


class _Config(dict):
    __getattr__ = dict.__getitem__


def test_heatmaps_and_highlighted_text_name_the_tokens(tmp_path, monkeypatch):
    texts = ["a gorgeous , witty film", "dull"]
    vocabulary = sase_data.WordVocabulary.build(texts)
    task = sase.create("tiny", vocabulary.vocab_size, training.default_config())
    params = random_params(task.model, np.ones((1, 3), np.int32))
    drawn = []
    plot = sase.viz.plot_attention

    def spy(weights, x_labels, y_labels, path, **kwargs):
        drawn.append((np.asarray(weights), list(x_labels), list(y_labels)))
        return plot(weights, x_labels, y_labels, path, **kwargs)

    monkeypatch.setattr(sase.viz, "plot_attention", spy)
    writer = tensorboardX.SummaryWriter(str(tmp_path / "tb"))
    paths = task.plot_hops(params, vocabulary, texts, [1, 0], tmp_path / "attention", writer, 0)
    writer.close()
    assert [pathlib.Path(p).name for p in paths] == ["hops_0.png", "hops_1.png", "attention.html"]
    assert all(pathlib.Path(p).stat().st_size > 0 for p in paths)
    assert drawn[0][1] == texts[0].split() and drawn[0][2] == ["hop 1", "hop 2", "hop 3"]
    np.testing.assert_allclose(drawn[0][0].sum(-1), 1.0, rtol=1e-5)
    page = pathlib.Path(paths[-1]).read_text()
    for word in texts[0].split():
        assert f">{word}</span>" in page
    assert page.count("<span") == 6 and "label 1" in page
    assert any(p.name.startswith("events") for p in (tmp_path / "tb").iterdir())
