"""Loading a pretrained BERT encoder and its tokenizer: from one of our pre-training runs (an
Orbax checkpoint with spm.model), from a Hugging Face folder, and the one-line errors."""

import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from attention_jax import training
from attention_jax.data import tokenizers
from attention_jax.interop import pretrained, save_hf_bert
from attention_jax.models import bert
from attention_jax.training.checkpoint import Checkpointer

TEXT = "In the beginning God created the heavens and the earth. The earth was formless and empty."


def _flat(params):
    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params, sep="/").items()}


def _init(model):
    ids_BT = jnp.zeros((1, 4), jnp.int32)
    return nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), ids_BT)["params"])


def test_a_pretraining_run_gives_its_encoder_and_sentencepiece_tokenizer(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text((TEXT + "\n") * 20)
    run_dir = tmp_path / "run"
    tokenizer = tokenizers.train_sentencepiece([corpus], run_dir, vocab_size=60)
    model = bert.BertForPreTraining(bert.BertConfig(tokenizer.vocab_size, 16, 1, 2, 32))
    params = _init(model)
    train_config = training.default_config()
    train_config.workdir = str(run_dir)
    checkpointer = Checkpointer(train_config, model)
    state = training.TrainState(
        step=jnp.int32(5), params=params, opt_state=jnp.zeros(()), rng=jnp.zeros(2, jnp.uint32)
    )
    checkpointer.save(5, state)
    checkpointer.wait()
    checkpointer.close()

    loaded = pretrained.load_pretrained_bert(str(run_dir))
    assert loaded.config == model.config
    assert isinstance(loaded.tokenizer, tokenizers.SentencePieceTokenizer)
    assert [str(f) for f in loaded.tokenizer.files] == [str(run_dir / "spm.model")]
    assert loaded.tokenizer.encode(TEXT) == tokenizer.encode(TEXT)
    encoder = _flat(loaded.encoder)
    assert encoder.keys() == _flat(params["bert"]).keys()
    for name, value in _flat(params["bert"]).items():
        np.testing.assert_array_equal(encoder[name], value, err_msg=name)


def test_a_hugging_face_folder_gives_its_encoder_and_wordpiece_tokenizer(tmp_path):
    words = TEXT.lower().replace(".", " .").split()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(words)]
    config = bert.BertConfig(len(vocab), 16, 1, 2, 32)
    params = _init(bert.BertModel(config))
    save_hf_bert(config, params, tmp_path)
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")

    loaded = pretrained.load_pretrained_bert(str(tmp_path))
    assert loaded.config == config
    assert [pathlib.Path(f).name for f in loaded.tokenizer.files] == ["vocab.txt"]
    assert loaded.tokenizer.decode(loaded.tokenizer.encode(TEXT)).split()[:2] == ["in", "the"]
    for name, value in _flat(params).items():
        np.testing.assert_allclose(_flat(loaded.encoder)[name], value, err_msg=name)


def test_init_from_must_name_a_bert_folder_or_a_run(tmp_path):
    with pytest.raises(ValueError, match="is neither a Hugging Face BERT folder"):
        pretrained.load_pretrained_bert(str(tmp_path / "nowhere"))
