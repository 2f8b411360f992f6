"""Import and export of other libraries' checkpoints (safetensors only; never pickle)."""

from attention_jax.interop.hf_bert import load_hf_bert, save_hf_bert
from attention_jax.interop.hf_gpt2 import load_hf_gpt2, save_hf_gpt2

__all__ = ["load_hf_bert", "load_hf_gpt2", "save_hf_bert", "save_hf_gpt2"]
