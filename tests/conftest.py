"""Shared test settings: float32 matmuls at full precision so references agree to 1e-5."""

import jax

jax.config.update("jax_default_matmul_precision", "highest")
