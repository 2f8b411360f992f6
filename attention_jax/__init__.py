"""attention_jax: the classic attention mechanisms and models of NLP in JAX/Flax."""

__version__ = "0.1.0"
