"""Hugging Face GPT-2 checkpoints (config.json + model.safetensors) to our `GPT` and back.

Only `safetensors` is read or written, through its NumPy API: no torch, no pickle. Both key
layouts load: "transformer.h.0.…" as `GPT2LMHeadModel` saves them and "h.0.…" as `GPT2Model`
does. GPT-2's output layer is tied to the token embedding, as ours is, so `lm_head.weight` is
not stored on export and, when a checkpoint has it, must equal `wte.weight`.

GPT-2 stores its projections as `Conv1D` weights (in, out), the layout of our Dense kernels, and
packs the query, key and value projections into one `c_attn` of D × 3D (q, k, v in that order
along the output axis), each output split into N heads of H.

D model dim, N heads, H head dim (D = N·H), F feed-forward dim, V vocabulary size.
"""

import functools
import pathlib
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from attention_jax.interop import hf_folder
from attention_jax.interop.hf_folder import WEIGHTS_FILE
from attention_jax.models.gpt import GPT, GPTConfig

# Our GPTConfig field <- config.json key.
_CONFIG_KEYS = {
    "vocab_size": "vocab_size",
    "num_layers": "n_layer",
    "d_model": "n_embd",
    "num_heads": "n_head",
    "max_len": "n_positions",
    "dropout_rate": "resid_pdrop",
    "attention_dropout_rate": "attn_pdrop",
    "layer_norm_eps": "layer_norm_epsilon",
    "initializer_range": "initializer_range",
}
# transformers.GPT2Config's defaults, which an absent key means.
_HF_DEFAULTS = {
    "vocab_size": 50257,
    "n_layer": 12,
    "n_embd": 768,
    "n_head": 12,
    "n_inner": None,  # 4 · n_embd
    "n_positions": 1024,
    "resid_pdrop": 0.1,
    "embd_pdrop": 0.1,
    "attn_pdrop": 0.1,
    "layer_norm_epsilon": 1e-5,
    "initializer_range": 0.02,
    "activation_function": "gelu_new",
    "scale_attn_weights": True,
    "scale_attn_by_inverse_layer_idx": False,
    "add_cross_attention": False,
    "tie_word_embeddings": True,
}
# Options our GPT has one setting of: config.json key -> the values that mean it. Both names are
# the tanh approximation of GELU; reorder_and_upcast_attn only changes half-precision rounding
# (our softmax always runs in float32), so either value is the same model.
_FIXED = {
    "activation_function": ("gelu_new", "gelu_pytorch_tanh"),
    "scale_attn_weights": (True,),
    "scale_attn_by_inverse_layer_idx": (False,),
    "add_cross_attention": (False,),
    "tie_word_embeddings": (True,),
}
# Causal-mask buffers that older GPT-2 checkpoints store beside the weights.
_BUFFER = re.compile(r"h\.\d+\.attn\.(masked_)?bias")


def config_from_hf(hf_config):
    """Our `GPTConfig` (GPT-2 blocks, learned positions) from a Hugging Face config.json dict."""
    if hf_config.get("model_type", "gpt2") != "gpt2":
        raise ValueError(f"model_type {hf_config['model_type']!r} is not 'gpt2'")
    hf_config = {**_HF_DEFAULTS, **hf_config}
    for key, supported in _FIXED.items():
        if hf_config[key] not in supported:
            raise ValueError(f"{key}={hf_config[key]!r} is not supported, only {supported[0]!r}")
    if hf_config["embd_pdrop"] != hf_config["resid_pdrop"]:
        raise ValueError(
            f"embd_pdrop ({hf_config['embd_pdrop']}) differs from resid_pdrop "
            f"({hf_config['resid_pdrop']}); our GPT has one dropout_rate for both"
        )
    fields = {ours: hf_config[theirs] for ours, theirs in _CONFIG_KEYS.items()}
    d_ff = hf_config["n_inner"] or 4 * hf_config["n_embd"]
    return GPTConfig(**fields, d_ff=d_ff, position="learned", pre_ln=True)


def config_to_hf(config):
    """The config.json dict of `transformers.GPT2LMHeadModel` for a GPT-2-shaped `GPTConfig`.

    It names no special tokens, so transformers assumes GPT-2's <|endoftext|> (50256).
    """
    if not config.pre_ln or config.position != "learned":
        raise ValueError(
            "GPT-2 has pre-LN blocks and learned positions; this config has "
            f"pre_ln={config.pre_ln}, position={config.position!r}"
        )
    if config.num_kv_heads not in (None, config.num_heads):
        raise ValueError(
            f"GPT-2 has no grouped-query attention (num_kv_heads={config.num_kv_heads})"
        )
    hf_config = {theirs: getattr(config, ours) for ours, theirs in _CONFIG_KEYS.items()}
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        **_HF_DEFAULTS,
        **hf_config,
        "n_inner": config.d_ff,
        "embd_pdrop": config.dropout_rate,
        "torch_dtype": "float32",
    }


def _weight_and_bias(theirs, ours, weight="kernel"):
    """Rows for a Conv1D (stored (in, out), as our kernels) or a LayerNorm (weight = scale)."""
    return [
        (f"{theirs}.weight", [ours + (weight,)], "copy"),
        (f"{theirs}.bias", [ours + ("bias",)], "copy"),
    ]


def _table(config):
    """(HF name, our paths, layout) for every tensor of a GPT-2 checkpoint, in its order."""
    table = [
        ("wte.weight", [("wte", "embedding")], "copy"),
        ("wpe.weight", [("wpe", "embedding")], "copy"),
    ]
    for i in range(config.num_layers):
        ours, theirs = (f"layers_{i}",), f"h.{i}"
        attention = ours + ("attention",)
        table += _weight_and_bias(f"{theirs}.ln_1", ours + ("attention_norm",), "scale")
        for hf_kind, kind in (("weight", "kernel"), ("bias", "bias")):
            qkv = [attention + (name, kind) for name in ("query", "key", "value")]
            table.append((f"{theirs}.attn.c_attn.{hf_kind}", qkv, "qkv"))
        table.append((f"{theirs}.attn.c_proj.weight", [attention + ("out", "kernel")], "heads_out"))
        table.append((f"{theirs}.attn.c_proj.bias", [attention + ("out", "bias")], "copy"))
        table += _weight_and_bias(f"{theirs}.ln_2", ours + ("mlp_norm",), "scale")
        table += _weight_and_bias(f"{theirs}.mlp.c_fc", ours + ("fc",))
        table += _weight_and_bias(f"{theirs}.mlp.c_proj", ours + ("proj",))
    return table + _weight_and_bias("ln_f", ("final_norm",), "scale")


def _from_hf(array, layout, config):
    """One HF tensor -> our arrays, one per path of its row."""
    N = config.num_heads
    H = config.d_model // N
    if layout == "qkv":  # (D, 3·N·H) -> 3 × (D, N, H); (3·N·H,) -> 3 × (N, H)
        q, k, v = np.moveaxis(array.reshape(*array.shape[:-1], 3, N, H), -3, 0)
        return [q, k, v]
    if layout == "heads_out":  # (N·H, D) -> (N, H, D)
        return [array.reshape(N, H, -1)]
    return [array]


def _to_hf(arrays, layout):
    """Our arrays (one per path of a row) -> the HF tensor."""
    if layout == "qkv":
        return np.concatenate([a.reshape(*a.shape[:-2], -1) for a in arrays], axis=-1)
    if layout == "heads_out":
        return arrays[0].reshape(-1, arrays[0].shape[-1])
    return arrays[0]


@functools.cache
def _our_shapes(config):
    """Path -> shape of every parameter of our `GPT`."""
    tree = jax.eval_shape(GPT(config).init, jax.random.key(0), jnp.zeros((1, 1), jnp.int32))
    flat = traverse_util.flatten_dict(nn.meta.unbox(tree["params"]))
    return {path: leaf.shape for path, leaf in flat.items()}


def load_hf_gpt2(model_dir):
    """Read a Hugging Face GPT-2 folder (config.json, model.safetensors) into (GPTConfig, params).

    Returns:
      (config, params): `params` is the tree of our `GPT`, NumPy arrays as stored.

    Raises:
      FileNotFoundError: the folder, config.json or model.safetensors is missing.
      ValueError: a config our GPT cannot represent (e.g. scale_attn_by_inverse_layer_idx), a
        file that is not JSON / safetensors, a missing, misshapen or unexpected tensor.
    """
    config, tensors = hf_folder.read(model_dir, config_from_hf, "GPT-2")
    weights_file = pathlib.Path(model_dir) / WEIGHTS_FILE
    tensors = {name.removeprefix("transformer."): array for name, array in tensors.items()}
    shapes = _our_shapes(config)
    flat = {}
    for name, paths, layout in _table(config):
        if name not in tensors:
            raise ValueError(f"{weights_file} lacks {name}")
        array = tensors.pop(name)
        expected = _to_hf([np.zeros(shapes[path], np.int8) for path in paths], layout).shape
        if array.shape != expected:
            raise ValueError(f"{name} has shape {array.shape}, config.json implies {expected}")
        flat.update(zip(paths, _from_hf(array, layout, config), strict=True))
    lm_head = tensors.pop("lm_head.weight", None)
    if lm_head is not None and not np.array_equal(lm_head, flat[("wte", "embedding")]):
        raise ValueError(f"{weights_file}: lm_head.weight differs from wte.weight (untied)")
    unknown = sorted(name for name in tensors if not _BUFFER.fullmatch(name))
    if unknown:
        raise ValueError(f"{weights_file} has tensors a GPT-2 LM does not: {', '.join(unknown)}")
    return config, traverse_util.unflatten_dict(flat)


def save_hf_gpt2(config, params, model_dir):
    """Write config.json and model.safetensors that `transformers.GPT2LMHeadModel.from_pretrained`
    reads (keys "transformer.…", the tied lm_head left out). Weights are stored as float32.

    Args:
      params: the tree of our `GPT` for `config` (boxed or not).
    """
    hf_config = config_to_hf(config)
    flat = traverse_util.flatten_dict(nn.meta.unbox(params))
    shapes = _our_shapes(config)
    tensors = {}
    for name, paths, layout in _table(config):
        arrays = []
        for path in paths:
            if path not in flat:
                raise ValueError(f"params lack {'/'.join(path)}")
            arrays.append(np.asarray(flat.pop(path), np.float32))
            if arrays[-1].shape != shapes[path]:
                raise ValueError(
                    f"{'/'.join(path)} has shape {arrays[-1].shape}, the config implies "
                    f"{shapes[path]}"
                )
        tensors[f"transformer.{name}"] = np.ascontiguousarray(_to_hf(arrays, layout))
    if flat:
        raise ValueError(f"no GPT-2 name for {['/'.join(path) for path in flat]}")
    hf_folder.write(model_dir, hf_config, tensors)
