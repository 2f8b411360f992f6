"""The counterfactual permutation test of Jain & Wallace 2019 ("Attention is not Explanation",
section 4.2.1): scramble an attention distribution α over the tokens many times, α̂ = permute(α),
and measure how far the output moves,

    Δŷ = TVD(ŷ(x, α̂), ŷ(x, α)),    TVD(p, q) = ½ Σ_c |p_c − q_c|;

their figure plots each example's median Δŷ against max α. Attention that explains a prediction
should matter: permuting a peaked α should move the output.

`with_permuted_attention` runs a model with one `MultiHeadAttention` layer's query row
replaced, for every head, by the same permutation of its weights; the rest of the model runs
as it is. The layer's value heads v and the input of its output projection are read and changed
while the model runs (Flax's method interception, as in `attribution`): row t of the attention
output becomes o_t + Σ_s (α̂_s − α_s) v_s, so the identity permutation changes nothing. For a
BERT classifier the row is [CLS]'s in the last layer, the only attention the classifier reads
directly (the pooler takes the last layer's [CLS] vector): the nearest BERT has to the single
attention distribution of Jain & Wallace's models.

B batch, N query heads, K key/value heads, G = N / K, T query positions, S key positions,
H head dim, P permutations, C classes.
"""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from attention_jax.data import batching


def random_permutations(rng: np.random.Generator, mask_ZS, count: int) -> np.ndarray:
    """perm_ZPS: `count` permutations per row, each a uniformly random order of the positions
    where `mask_ZS` is True (the real tokens) and the identity elsewhere."""
    mask_ZS = np.asarray(mask_ZS, bool)
    Z, S = mask_ZS.shape
    perm_ZPS = np.broadcast_to(np.arange(S), (Z, count, S)).copy()
    for row_S, perm_PS in zip(mask_ZS, perm_ZPS, strict=True):
        (real,) = np.nonzero(row_S)
        for perm_S in perm_PS:
            perm_S[real] = rng.permutation(real)
    return perm_ZPS


def permute(weights_BNS, perm_BS):
    """α̂_BNS: α̂_s = α_{perm[s]} in every head."""
    return jnp.take_along_axis(weights_BNS, perm_BS[:, None, :], axis=-1)


def with_permuted_attention(fn, layer: str, weights_BNTS, perm_BS, *, query: int = 0):
    """`fn()` with the weights of query row `query` of the `MultiHeadAttention` at path `layer`
    ("bert/layers_5/attention") permuted by `perm_BS` in every head.

    `weights_BNTS` are the layer's own weights on the same inputs (`Task.attention_weights`); the
    layer must be called once, without a head mask.
    """
    B, N, T, S = weights_BNTS.shape
    delta_BNS = permute(weights_BNTS[:, :, query], perm_BS) - weights_BNTS[:, :, query]
    values = []

    def interceptor(next_fun, args, kwargs, context):
        path = "/".join(context.module.path)
        if context.method_name != "__call__" or path not in (f"{layer}/value", f"{layer}/out"):
            return next_fun(*args, **kwargs)
        if path.endswith("/value"):
            values.append(next_fun(*args, **kwargs))
            return values[-1]
        if len(values) != 1:
            raise ValueError(f"{layer} must be a MultiHeadAttention called once")
        v_BSKH = values[0]
        K, H = v_BSKH.shape[2:]
        delta_BKGS = delta_BNS.reshape(B, K, N // K, S).astype(v_BSKH.dtype)
        change_BNH = jnp.einsum("BKGS,BSKH->BKGH", delta_BKGS, v_BSKH).reshape(B, N, H)
        out_BTNH = args[0].at[:, query].add(change_BNH)
        return next_fun(out_BTNH, *args[1:], **kwargs)

    with nn.intercept_methods(interceptor):
        return fn()


def total_variation(p_BC, q_BC):
    """tvd_B = ½ Σ_c |p_c − q_c|."""
    return 0.5 * jnp.abs(p_BC - q_BC).sum(-1)


def permutation_test(
    task, params, features, perm_ZPS, *, batch_size: int, prefix="bert/", query=0, chunk=16
):
    """(tvd_ZP, attention_ZS): the total variation between the class probabilities of a
    classifier task on each row of `features` with row `query` of its last attention layer
    under `prefix` permuted by perm_ZPS[z, p] and without, and that attention row averaged over
    the heads.

    Rows run `batch_size` at a time (one compiled function) and permutations `chunk` at a time,
    vectorised: the layers below the permuted one do not depend on the permutation.
    """

    @jax.jit
    def test(params, batch):
        weights = task.attention_weights(params, batch)
        layer = [path for path in weights if path.startswith(prefix)][-1]
        weights_BNTS = weights[layer]
        probs_BC = jax.nn.softmax(task.apply(params, batch).astype(jnp.float32))

        def tvd_B(perm_BS):
            logits_BC = with_permuted_attention(
                lambda: task.apply(params, batch), layer, weights_BNTS, perm_BS, query=query
            )
            return total_variation(jax.nn.softmax(logits_BC.astype(jnp.float32)), probs_BC)

        perm_PBS = jnp.swapaxes(batch["permutation"], 0, 1)
        tvd_PB = jax.lax.map(tvd_B, perm_PBS, batch_size=chunk)
        return tvd_PB.T, weights_BNTS[:, :, query].mean(1)

    rows = {**features, "permutation": perm_ZPS}
    parts = [jax.device_get(test(params, b)) for b in batching.eval_batches(rows, batch_size)]
    Z = len(perm_ZPS)
    return tuple(np.concatenate(part)[:Z] for part in zip(*parts, strict=True))


def summary(tvd_ZP, attention_ZS, edges=(0.0, 0.25, 0.5, 0.75, 1.0)) -> dict:
    """Quartiles over the rows of each row's median and largest TVD and of its max attention,
    and per bin low ≤ max attention < high of `edges` (the last bin includes high) the rows in
    it and the median of their median TVDs (None for an empty bin)."""
    median_tvd_Z, max_attention_Z = np.median(tvd_ZP, 1), np.max(attention_ZS, 1)
    bin_Z = np.searchsorted(edges[1:-1], max_attention_Z, side="right")
    bins = {}
    for i, (low, high) in enumerate(itertools.pairwise(edges)):
        in_bin = median_tvd_Z[bin_Z == i]
        bins[f"{low}-{high}"] = {
            "sentences": len(in_bin),
            "median_tvd": float(np.median(in_bin)) if len(in_bin) else None,
        }
    quartiles = {
        "median_tvd": median_tvd_Z,
        "max_tvd": np.max(tvd_ZP, 1),
        "max_attention": max_attention_Z,
    }
    return {
        "permutations": tvd_ZP.shape[1],
        "quartiles": {k: np.percentile(x, [25, 50, 75]).tolist() for k, x in quartiles.items()},
        "median_tvd_by_max_attention": bins,
    }
