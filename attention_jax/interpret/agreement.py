"""Agreement between two importance rankings of the same tokens, per example, as Jain & Wallace
2019 ("Attention is not Explanation", section 4.1) measure attention against gradients.

Kendall's τ_b over the token pairs i < j of each row,

    τ_b = Σ_{i<j} sgn(a_i − a_j) sgn(b_i − b_j) / √((n₀ − n_a)(n₀ − n_b)),

n₀ the number of pairs and n_a, n_b the pairs tied in a or in b (the τ scipy.stats.kendalltau
computes by default; NaN where a row is constant). Top-k overlap is the fraction of the k most
important tokens under a that are also among the k most important under b.

B batch, S tokens.
"""

import jax.numpy as jnp


def _pair_mask(mask_BS, shape_BS):
    mask_BS = jnp.ones(shape_BS, bool) if mask_BS is None else jnp.asarray(mask_BS, bool)
    upper_SS = jnp.triu(jnp.ones(shape_BS[-1:] * 2, bool), k=1)
    return mask_BS[:, :, None] & mask_BS[:, None, :] & upper_SS


def kendall_tau(a_BS, b_BS, mask_BS=None):
    """tau_B: Kendall's τ_b between a and b over the tokens where `mask_BS` is True."""
    if a_BS.shape != b_BS.shape or a_BS.ndim != 2:
        raise ValueError(f"a {a_BS.shape} and b {b_BS.shape} must be the same (B, S) shape")
    pairs_BSS = _pair_mask(mask_BS, a_BS.shape)
    sign_a_BSS = jnp.sign(a_BS[:, :, None] - a_BS[:, None, :]) * pairs_BSS
    sign_b_BSS = jnp.sign(b_BS[:, :, None] - b_BS[:, None, :]) * pairs_BSS
    untied_a_B = jnp.abs(sign_a_BSS).sum((1, 2))
    untied_b_B = jnp.abs(sign_b_BSS).sum((1, 2))
    return (sign_a_BSS * sign_b_BSS).sum((1, 2)) / jnp.sqrt(untied_a_B * untied_b_B)


def top_k_overlap(a_BS, b_BS, k: int, mask_BS=None):
    """overlap_B: |top-k(a) ∩ top-k(b)| / k over the tokens where `mask_BS` is True (rows with
    fewer than k such tokens compare all of them, divided by their number)."""
    if a_BS.shape != b_BS.shape or a_BS.ndim != 2:
        raise ValueError(f"a {a_BS.shape} and b {b_BS.shape} must be the same (B, S) shape")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    mask_BS = jnp.ones(a_BS.shape, bool) if mask_BS is None else jnp.asarray(mask_BS, bool)
    k_B = jnp.minimum(k, mask_BS.sum(-1))

    def top_BS(x_BS):
        x_BS = jnp.where(mask_BS, x_BS.astype(jnp.float32), -jnp.inf)
        rank_BS = jnp.argsort(jnp.argsort(-x_BS, axis=-1, stable=True), axis=-1, stable=True)
        return rank_BS < k_B[:, None]

    return (top_BS(a_BS) & top_BS(b_BS)).sum(-1) / jnp.maximum(k_B, 1)
