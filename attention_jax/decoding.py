"""Autoregressive decoding for any model: greedy, temperature / top-k / top-p sampling, beam search.

A model is seen through one function and its state:

    step_fn(state, tokens_B) -> (logits_BV, state)

`tokens_B` is the previous token of each sequence (BOS first); the logits score the next one.
`bos_id` is one id for every sequence or an array of B ids: a language model continuing prompts
starts from each prompt's last token (`GPT.start_decoding` has read the tokens before it).
`state` is any pytree: a Transformer's encoder output and key/value cache, an RNN's hidden state
(every encoder-decoder gives both: `step_fn, state = model.start_decoding(params, src_BS, L)`).
Every leaf with ndim >= 1 must have the batch on axis 0 (beam search repeats such leaves for
each beam and gathers them when beams are reordered); scalars, such as cache indices, are shared.
Everything runs in `lax.while_loop`, so a whole decode compiles under `jax.jit`.

Outputs hold the generated tokens after BOS: EOS is kept, and every position after it is padding.

B batch, W beams (2W: the candidates kept per beam-search step), L maximum generated length,
V vocabulary size.
"""

import jax
import jax.numpy as jnp

NEG_INF = -jnp.inf


def _batch_size(state):
    sizes = {x.shape[0] for x in jax.tree.leaves(state) if jnp.ndim(x) >= 1}
    if len(sizes) != 1:
        raise ValueError(f"state leaves must share one leading batch size, got sizes {sizes}")
    return sizes.pop()


def _check_lengths(max_len, eos_id, bos_id):
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    if isinstance(bos_id, int) and eos_id == bos_id:
        raise ValueError(f"eos_id and bos_id must differ, both are {eos_id}")


def filter_logits(logits_BV, *, top_k=None, top_p=None):
    """Sets to -inf every logit outside the top k and outside the nucleus of mass `top_p`.

    The nucleus (Holtzman et al. 2020) is the smallest set of most likely tokens whose probability
    reaches `top_p`; the token that crosses the threshold is kept.
    """
    logits_BV = logits_BV.astype(jnp.float32)
    if top_k is not None:
        if not 1 <= top_k <= logits_BV.shape[-1]:
            raise ValueError(f"top_k must be in [1, {logits_BV.shape[-1]}], got {top_k}")
        kth_B1 = jax.lax.top_k(logits_BV, top_k)[0][:, -1:]
        logits_BV = jnp.where(logits_BV < kth_B1, NEG_INF, logits_BV)
    if top_p is not None:
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        sorted_BV = jnp.sort(logits_BV, axis=-1)[:, ::-1]
        probs_BV = jax.nn.softmax(sorted_BV, axis=-1)
        # A token is in the nucleus if the mass strictly before it is still short of top_p.
        before_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV
        cutoff_B1 = jnp.min(jnp.where(before_BV < top_p, sorted_BV, jnp.inf), -1, keepdims=True)
        logits_BV = jnp.where(logits_BV < cutoff_B1, NEG_INF, logits_BV)
    return logits_BV


def _generate(step_fn, state, choose, rng, *, bos_id, eos_id, max_len, pad_id):
    """One token per step with `choose(logits_BV, rng) -> tokens_B` until EOS or max_len."""
    _check_lengths(max_len, eos_id, bos_id)
    B = _batch_size(state)

    def cond(carry):
        i, _, _, finished_B, _ = carry
        return (i < max_len) & ~jnp.all(finished_B)

    def body(carry):
        i, tokens_BL, last_B, finished_B, state = carry
        logits_BV, state = step_fn(state, last_B)
        token_B = jnp.where(finished_B, pad_id, choose(logits_BV, jax.random.fold_in(rng, i)))
        tokens_BL = tokens_BL.at[:, i].set(token_B)
        return i + 1, tokens_BL, token_B, finished_B | (token_B == eos_id), state

    carry = (
        jnp.array(0, jnp.int32),
        jnp.full((B, max_len), pad_id, jnp.int32),
        jnp.broadcast_to(jnp.asarray(bos_id, jnp.int32), (B,)),
        jnp.zeros((B,), bool),
        state,
    )
    return jax.lax.while_loop(cond, body, carry)[1]


def greedy(step_fn, state, *, bos_id, eos_id, max_len, pad_id=0):
    """The most likely token at every step: tokens_BL."""

    def choose(logits_BV, _):
        return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)

    return _generate(
        step_fn,
        state,
        choose,
        jax.random.PRNGKey(0),
        bos_id=bos_id,
        eos_id=eos_id,
        max_len=max_len,
        pad_id=pad_id,
    )


def sample(
    step_fn,
    state,
    rng,
    *,
    bos_id,
    eos_id,
    max_len,
    temperature=1.0,
    top_k=None,
    top_p=None,
    pad_id=0,
):
    """Ancestral sampling from softmax(logits / temperature), optionally restricted to the top k
    tokens and / or the top-p nucleus (`filter_logits`): tokens_BL. Temperature 0 is greedy."""
    if temperature < 0.0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0.0:
        return greedy(step_fn, state, bos_id=bos_id, eos_id=eos_id, max_len=max_len, pad_id=pad_id)

    def choose(logits_BV, rng):
        logits_BV = filter_logits(logits_BV / temperature, top_k=top_k, top_p=top_p)
        return jax.random.categorical(rng, logits_BV, axis=-1).astype(jnp.int32)

    return _generate(
        step_fn,
        state,
        choose,
        rng,
        bos_id=bos_id,
        eos_id=eos_id,
        max_len=max_len,
        pad_id=pad_id,
    )


def length_penalty(length, alpha):
    """GNMT's lp(Y) = ((5 + |Y|) / 6)^α (Wu et al. 2016, eq. 14); scores are log P(Y) / lp(Y)."""
    return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


def _gather_beams(x, beams):
    """x[b, beams[b, j]] for x shaped (B, W, ...) and beams (B, W'): shaped (B, W', ...)."""
    index = beams.reshape(beams.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, index, axis=1)


def beam_search(step_fn, state, *, beam_size, bos_id, eos_id, max_len, alpha=0.6, pad_id=0):
    """Batched beam search with GNMT length normalisation.

    Each step extends the W live beams by every token and keeps the 2W best extensions (enough
    for W of them not to end in EOS). Those among the best W that end in EOS are finished, as in
    fairseq: they join the W best finished hypotheses, scored log P(Y) / lp(|Y|) with |Y| counting
    EOS. The best W that do not end in EOS live on.
    The search stops at `max_len` or once no live beam can beat the worst finished hypothesis of
    its example: log P only falls as a beam grows, so log P / lp(max_len) bounds its final
    score for α >= 0. An example with no finished hypothesis returns its live beams at max_len.

    With `beam_size=1` and `alpha=0` this is greedy decoding.

    Returns:
      (sequences_BWL, scores_BW), best first; a score of -inf marks an empty slot (fewer than W
      hypotheses exist).
    """
    _check_lengths(max_len, eos_id, bos_id)
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    if alpha < 0.0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    B, W = _batch_size(state), beam_size
    state = jax.tree.map(lambda x: jnp.repeat(x, W, axis=0) if jnp.ndim(x) else x, state)
    offsets_B1 = jnp.arange(B)[:, None] * W

    def cond(carry):
        i, _, alive_logp_BW, _, finished_BW, _, _ = carry
        best_alive_B = alive_logp_BW[:, 0] / length_penalty(max_len, alpha)
        done = jnp.all(finished_BW[:, -1] > best_alive_B)
        return (i < max_len) & ~done

    def body(carry):
        i, alive_BWL, alive_logp_BW, last_BW, finished_BW, finished_BWL, state = carry
        # The state holds B·W rows: row b·W + w is beam w of example b.
        flat_logits, state = step_fn(state, last_BW.reshape(B * W))
        V = flat_logits.shape[-1]
        logp_BWV = jax.nn.log_softmax(flat_logits.astype(jnp.float32)).reshape(B, W, V)
        candidates_BWV = alive_logp_BW[:, :, None] + logp_BWV
        logp_B2W, flat_B2W = jax.lax.top_k(candidates_BWV.reshape(B, W * V), 2 * W)
        beams_B2W, tokens_B2W = flat_B2W // V, (flat_B2W % V).astype(jnp.int32)
        seqs_B2WL = _gather_beams(alive_BWL, beams_B2W).at[:, :, i].set(tokens_B2W)
        is_eos_B2W = tokens_B2W == eos_id

        alive_logp_BW, keep_BW = jax.lax.top_k(jnp.where(is_eos_B2W, NEG_INF, logp_B2W), W)
        alive_BWL = _gather_beams(seqs_B2WL, keep_BW)
        last_BW = _gather_beams(tokens_B2W, keep_BW)
        parents_BW = offsets_B1 + _gather_beams(beams_B2W, keep_BW)
        rows = parents_BW.reshape(B * W)
        state = jax.tree.map(lambda x: x[rows] if jnp.ndim(x) else x, state)

        ends_B2W = is_eos_B2W & (jnp.arange(2 * W) < W)
        new_scores_B2W = jnp.where(ends_B2W, logp_B2W / length_penalty(i + 1, alpha), NEG_INF)
        merged_scores = jnp.concatenate([finished_BW, new_scores_B2W], axis=1)  # B × 3W
        merged_seqs = jnp.concatenate([finished_BWL, seqs_B2WL], axis=1)
        finished_BW, best_BW = jax.lax.top_k(merged_scores, W)
        finished_BWL = _gather_beams(merged_seqs, best_BW)
        return i + 1, alive_BWL, alive_logp_BW, last_BW, finished_BW, finished_BWL, state

    first_BW = jnp.zeros((B, W), jnp.float32).at[:, 1:].set(NEG_INF)  # one live beam to start
    empty_BWL = jnp.full((B, W, max_len), pad_id, jnp.int32)
    carry = (
        jnp.array(0, jnp.int32),
        empty_BWL,
        first_BW,
        jnp.broadcast_to(jnp.asarray(bos_id, jnp.int32).reshape(-1, 1), (B, W)),
        jnp.full((B, W), NEG_INF, jnp.float32),
        empty_BWL,
        state,
    )
    _, alive_BWL, alive_logp_BW, _, finished_BW, finished_BWL, _ = jax.lax.while_loop(
        cond, body, carry
    )
    none_finished_B = finished_BW[:, 0] == NEG_INF
    sequences_BWL = jnp.where(none_finished_B[:, None, None], alive_BWL, finished_BWL)
    alive_scores_BW = alive_logp_BW / length_penalty(max_len, alpha)
    scores_BW = jnp.where(none_finished_B[:, None], alive_scores_BW, finished_BW)
    return sequences_BWL, scores_BW
