"""Import and export of other libraries' checkpoints (safetensors only; never pickle)."""

from attention_jax.interop.hf_bert import load_hf_bert, save_hf_bert

__all__ = ["load_hf_bert", "save_hf_bert"]
