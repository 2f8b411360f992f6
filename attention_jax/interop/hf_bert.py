"""Hugging Face BERT checkpoints (config.json + model.safetensors) to our parameter tree and back.

Only `safetensors` is read or written, through its NumPy API: no torch, no pickle. A checkpoint
of `BertModel` (keys "embeddings.…", "encoder.…", "pooler.…") becomes the parameters of our
`BertModel`; one with heads (keys "bert.…" plus "cls.…", "classifier.…" or "qa_outputs.…")
becomes a tree with the encoder under "bert" and our heads beside it, as `BertForPreTraining`,
`BertForSequenceClassification` / `BertForTokenClassification` or `BertForQuestionAnswering`
lay it out. The MLM decoder is tied to the word embeddings on both sides, so it is not stored.

D hidden size, N heads, H head dim (D = N·H), F intermediate size, V vocabulary size.
"""

import functools
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from attention_jax.interop import hf_folder
from attention_jax.interop.hf_folder import WEIGHTS_FILE
from attention_jax.models.bert import (
    BertConfig,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
)

# Our config field <- Hugging Face config.json key.
_CONFIG_KEYS = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "intermediate_size": "intermediate_size",
    "max_position_embeddings": "max_position_embeddings",
    "type_vocab_size": "type_vocab_size",
    "hidden_dropout_rate": "hidden_dropout_prob",
    "attention_dropout_rate": "attention_probs_dropout_prob",
    "layer_norm_eps": "layer_norm_eps",
    "initializer_range": "initializer_range",
    "hidden_act": "hidden_act",
}


def _dense(ours, theirs):
    """A PyTorch Linear stores weight (out, in); ours is kernel (in, out)."""
    return [
        (ours + ("kernel",), theirs + ".weight", "linear"),
        (ours + ("bias",), theirs + ".bias", "copy"),
    ]


def _norm(ours, theirs):
    return [
        (ours + ("scale",), theirs + ".weight", "copy"),
        (ours + ("bias",), theirs + ".bias", "copy"),
    ]


def _encoder_table(config):
    """(our path, HF name, layout) for every encoder parameter, in checkpoint order."""
    table = [
        (("embeddings", name, "embedding"), f"embeddings.{name}.weight", "copy")
        for name in ("word_embeddings", "position_embeddings", "token_type_embeddings")
    ]
    table += _norm(("embeddings", "layer_norm"), "embeddings.LayerNorm")
    for i in range(config.num_layers):
        ours, theirs = (f"layers_{i}",), f"encoder.layer.{i}"
        attention = ours + ("attention",)
        for name in ("query", "key", "value"):
            hf_name = f"{theirs}.attention.self.{name}"
            table.append((attention + (name, "kernel"), hf_name + ".weight", "heads_in"))
            table.append((attention + (name, "bias"), hf_name + ".bias", "heads_bias"))
        hf_name = f"{theirs}.attention.output.dense"
        table.append((attention + ("out", "kernel"), hf_name + ".weight", "heads_out"))
        table.append((attention + ("out", "bias"), hf_name + ".bias", "copy"))
        table += _norm(ours + ("attention_norm",), f"{theirs}.attention.output.LayerNorm")
        table += _dense(ours + ("intermediate",), f"{theirs}.intermediate.dense")
        table += _dense(ours + ("output",), f"{theirs}.output.dense")
        table += _norm(ours + ("output_norm",), f"{theirs}.output.LayerNorm")
    return table + _dense(("pooler",), "pooler.dense")


# Each head: our top-level name -> its rows (paths relative to the model root).
_HEADS = {
    "mlm_transform": _dense(("mlm_transform",), "cls.predictions.transform.dense"),
    "mlm_norm": _norm(("mlm_norm",), "cls.predictions.transform.LayerNorm"),
    "mlm_output_bias": [(("mlm_output_bias",), "cls.predictions.bias", "copy")],
    "nsp": _dense(("nsp",), "cls.seq_relationship"),
    "classifier": _dense(("classifier",), "classifier"),
    "qa_outputs": _dense(("qa_outputs",), "qa_outputs"),
}


def _from_hf(array, layout, config):
    N = config.num_heads
    H = config.hidden_size // N
    if layout == "linear":
        return array.T
    if layout == "heads_in":  # (N·H, D) -> (D, N, H)
        return array.T.reshape(-1, N, H)
    if layout == "heads_bias":
        return array.reshape(N, H)
    if layout == "heads_out":  # (D, N·H) -> (N, H, D)
        return array.T.reshape(N, H, -1)
    return array


def _to_hf(array, layout):
    if layout == "linear":
        return array.T
    if layout == "heads_in":  # (D, N, H) -> (N·H, D)
        return array.reshape(array.shape[0], -1).T
    if layout == "heads_bias":
        return array.reshape(-1)
    if layout == "heads_out":  # (N, H, D) -> (D, N·H)
        return array.reshape(-1, array.shape[-1]).T
    return array


def _table(config, heads):
    """(our path, HF name, layout) rows: the encoder (without the "bert" prefixes), the heads."""
    return _encoder_table(config) + [row for head in heads for row in _HEADS[head]]


@functools.cache
def _our_shapes(config):
    """Path -> shape of every parameter of our BERT models (encoder paths without "bert")."""
    ids_BT = jnp.zeros((1, 1), jnp.int32)
    shapes = {}
    for model in (BertForPreTraining, BertForSequenceClassification, BertForQuestionAnswering):
        tree = jax.eval_shape(model(config).init, jax.random.key(0), ids_BT)
        for path, leaf in traverse_util.flatten_dict(nn.meta.unbox(tree["params"])).items():
            shapes[path[1:] if path[0] == "bert" else path] = leaf.shape
    return shapes


def _check_shape(name, array, layout, shape, config):
    """`array` (HF layout) in our layout, or a ValueError when its shape does not fit `shape`."""
    try:
        ours = _from_hf(array, layout, config)
    except ValueError:
        ours = None
    if ours is None or ours.shape != shape:
        expected = _to_hf(np.zeros(shape, np.int8), layout).shape
        raise ValueError(f"{name} has shape {array.shape}, config.json implies {expected}")
    return ours


def config_from_hf(hf_config):
    """Our `BertConfig` from a Hugging Face config.json dict."""
    if hf_config.get("model_type", "bert") != "bert":
        raise ValueError(f"model_type {hf_config['model_type']!r} is not 'bert'")
    position_type = hf_config.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise ValueError(
            f"position_embedding_type {position_type!r} is not supported, only 'absolute'"
        )
    if "vocab_size" not in hf_config:
        raise ValueError("config.json lacks vocab_size")
    # Our BertConfig defaults are those of Hugging Face's, so absent keys mean the same.
    fields = {
        ours: hf_config[theirs] for ours, theirs in _CONFIG_KEYS.items() if theirs in hf_config
    }
    if "id2label" in hf_config:
        fields["num_labels"] = len(hf_config["id2label"])
    return BertConfig(**fields)


def config_to_hf(config, num_labels=None):
    """The Hugging Face config.json dict for our `BertConfig` (`num_labels` overrides its own)."""
    hf_config = {theirs: getattr(config, ours) for ours, theirs in _CONFIG_KEYS.items()}
    labels = {str(i): f"LABEL_{i}" for i in range(num_labels or config.num_labels)}
    return {
        "model_type": "bert",
        **hf_config,
        "position_embedding_type": "absolute",
        "pad_token_id": 0,
        "id2label": labels,
        "label2id": {name: int(i) for i, name in labels.items()},
        "torch_dtype": "float32",
    }


def load_hf_bert(model_dir, *, params=None):
    """Read a Hugging Face BERT checkpoint folder into (BertConfig, params).

    Args:
      model_dir: folder with config.json and model.safetensors.
      params: optional parameter tree of the model to load into (e.g. a freshly initialised
        `BertForSequenceClassification`, boxed or not). The checkpoint's weights replace the
        matching leaves, shapes checked; leaves the checkpoint lacks (a new classifier) keep
        their values, checkpoint heads the model lacks are dropped. Encoder-only weights go into
        the "bert" subtree when the model has one.

    Returns:
      (config, params): NumPy float arrays in our layout. Without `params`, the tree is that of
      `BertModel` for an encoder-only checkpoint, else encoder under "bert" plus the heads found.
    """
    config, tensors = hf_folder.read(model_dir, config_from_hf, "BERT")
    weights_file = pathlib.Path(model_dir) / WEIGHTS_FILE
    # Checkpoints from models with heads prefix the encoder with "bert."; old TF conversions name
    # LayerNorm parameters gamma/beta.
    tensors = {
        name.removeprefix("bert.")
        .replace("LayerNorm.gamma", "LayerNorm.weight")
        .replace("LayerNorm.beta", "LayerNorm.bias"): array
        for name, array in tensors.items()
    }
    heads = [head for head, rows in _HEADS.items() if rows[0][1] in tensors]
    shapes = _our_shapes(config)
    loaded = {}  # encoder paths without "bert", as in `_our_shapes`
    for path, name, layout in _table(config, heads):
        if name not in tensors:
            raise ValueError(f"{weights_file} lacks {name}")
        loaded[path] = _check_shape(name, tensors[name], layout, shapes[path], config)
    if params is None:
        return config, traverse_util.unflatten_dict(_prefix_encoder(loaded, bool(heads)))
    return config, _merge(params, loaded)


def _prefix_encoder(flat, under_bert):
    """Put the encoder's paths under "bert" (when `under_bert`), leaving the heads' alone."""
    if not under_bert:
        return flat
    return {(path if path[0] in _HEADS else ("bert",) + path): leaf for path, leaf in flat.items()}


def _merge(params, loaded):
    """`params` with the leaves of `loaded` (flat, our layout) put in, keeping any boxing."""
    target = traverse_util.flatten_dict(params)
    loaded = _prefix_encoder(loaded, any(path[0] == "bert" for path in target))
    for path, array in loaded.items():
        if path not in target:
            if path[0] in _HEADS:
                continue
            raise ValueError(f"the model has no parameter {'/'.join(path)}")
        leaf = target[path]
        boxed = isinstance(leaf, nn.meta.AxisMetadata)
        shape = np.shape(leaf.unbox() if boxed else leaf)
        if array.shape != shape:
            raise ValueError(f"{'/'.join(path)} has shape {shape}, the checkpoint {array.shape}")
        target[path] = leaf.replace_boxed(array) if boxed else array
    return traverse_util.unflatten_dict(target)


def save_hf_bert(config, params, model_dir):
    """Write config.json and model.safetensors that `transformers.BertModel.from_pretrained` (or
    the head class matching the tree) reads. Weights are stored as float32.

    Args:
      params: the tree of `BertModel`, or of a model with the encoder under "bert" and heads
        among "mlm_*", "nsp", "classifier", "qa_outputs" (boxed or not).
    """
    flat = traverse_util.flatten_dict(nn.meta.unbox(params))
    under_bert = any(path[0] == "bert" for path in flat)
    flat = {(path[1:] if path[0] == "bert" else path): leaf for path, leaf in flat.items()}
    heads = [head for head in _HEADS if any(path[0] == head for path in flat)]
    shapes = _our_shapes(config)
    tensors = {}
    for path, name, layout in _table(config, heads):
        if path not in flat:
            raise ValueError(f"params lack {'/'.join(path)}")
        array = np.asarray(flat.pop(path), np.float32)
        if array.shape != shapes[path]:
            raise ValueError(
                f"{'/'.join(path)} has shape {array.shape}, the config implies {shapes[path]}"
            )
        prefix = "bert." if under_bert and path[0] not in _HEADS else ""
        tensors[prefix + name] = np.ascontiguousarray(_to_hf(array, layout))
    if flat:
        raise ValueError(f"no Hugging Face name for {['/'.join(path) for path in flat]}")

    # Hugging Face sizes its span (start, end) classifier by num_labels.
    hf_config = config_to_hf(config, num_labels=2 if "qa_outputs" in heads else None)
    if "nsp" in heads:
        hf_config["architectures"] = ["BertForPreTraining"]
    elif not heads:
        hf_config["architectures"] = ["BertModel"]
    hf_folder.write(model_dir, hf_config, tensors)
