"""Memory-efficient attention (placeholder until the chunked implementation lands)."""

MIN_CHUNKED_LOGITS = 2048 * 2048


def chunked_attention(q_BTNH, k_BSKH, v_BSKH, *, mask, bias, is_causal, scale, dropout_rate,
                      dropout_rng):
    raise NotImplementedError
