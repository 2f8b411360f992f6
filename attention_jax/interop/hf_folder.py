"""A Hugging Face checkpoint folder: config.json and model.safetensors, nothing else.

Weights go through `safetensors`' NumPy API only (no torch, no pickle), since a downloaded folder
is untrusted data; each family module (`hf_bert`, `hf_gpt2`) maps the names and layouts.
"""

import json
import pathlib

from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def _require(path):
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    return path


def read(model_dir, config_from_hf, family):
    """(config, {name: NumPy array}) of a folder, with one-line errors naming the bad file.

    Args:
      config_from_hf: our config from the config.json dict; raises ValueError (or TypeError,
        AttributeError on a JSON value of the wrong type) for a config it cannot represent.
      family: the model family named in errors ("BERT", "GPT-2").
    """
    model_dir = _require(pathlib.Path(model_dir))
    config_file = _require(model_dir / CONFIG_FILE)
    weights_file = _require(model_dir / WEIGHTS_FILE)
    try:
        config = config_from_hf(json.loads(config_file.read_text()))
    except (ValueError, TypeError, AttributeError) as error:  # not JSON, or not this family's
        raise ValueError(f"{config_file}: not a {family} config.json ({error})") from None
    try:
        tensors = load_file(weights_file)
    except SafetensorError as error:
        raise ValueError(f"{weights_file}: not a safetensors file ({error})") from None
    return config, tensors


def write(model_dir, hf_config, tensors):
    """Write `hf_config` as config.json and `tensors` as model.safetensors (PyTorch format)."""
    model_dir = pathlib.Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / CONFIG_FILE).write_text(json.dumps(hf_config, indent=2) + "\n")
    save_file(tensors, model_dir / WEIGHTS_FILE, metadata={"format": "pt"})
