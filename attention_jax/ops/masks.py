"""Boolean attention masks (True = attend) and the one masked softmax every op uses.

B batch, T query length, S key length.
"""

import jax
import jax.numpy as jnp


def padding_mask(valid_q_BT, valid_k_BS):
    """Query t may attend key s when both are real tokens: mask_BTS."""
    return valid_q_BT[:, :, None] & valid_k_BS[:, None, :]


def causal_mask(T, S=None, offset=0):
    """Query t attends key s iff s <= t + offset (offset = keys already cached): mask_TS."""
    S = T if S is None else S
    return jnp.arange(S)[None, :] <= jnp.arange(T)[:, None] + offset


def cross_mask(valid_k_BS, T):
    """Every decoder position attends every real encoder position: mask_BTS."""
    return jnp.broadcast_to(valid_k_BS[:, None, :], (valid_k_BS.shape[0], T, valid_k_BS.shape[1]))


def segment_mask(segment_q_BT, segment_k_BS):
    """Packed sequences: attend only within the same segment id; id 0 is padding: mask_BTS."""
    same_BTS = segment_q_BT[:, :, None] == segment_k_BS[:, None, :]
    return same_BTS & (segment_q_BT[:, :, None] > 0) & (segment_k_BS[:, None, :] > 0)


def combine_masks(*masks):
    """Logical AND of the masks that are not None (broadcasting), or None if all are None."""
    masks = [m for m in masks if m is not None]
    if not masks:
        return None
    combined = masks[0]
    for m in masks[1:]:
        combined = jnp.logical_and(combined, m)
    return combined


def masked_softmax(logits, mask=None, axis=-1):
    """Softmax in float32 over `axis`; masked entries and fully masked rows get weight 0."""
    logits = logits.astype(jnp.float32)
    if mask is None:
        return jax.nn.softmax(logits, axis=axis)
    weights = jax.nn.softmax(jnp.where(mask, logits, jnp.finfo(jnp.float32).min), axis=axis)
    # A fully masked row comes out uniform; zeroing masked entries makes it all zeros.
    return jnp.where(mask, weights, 0.0)
