"""Decoding on hand-built Markov models: beam search against brute-force enumeration, GNMT length
penalty, beam 1 = greedy, top-k = 1 and temperature → 0 sampling = greedy, the top-p nucleus.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax import decoding

PAD, EOS, A, B_, BOS = 0, 1, 2, 3, 4
V = 5


def second_order_model(seed, num_models=2):
    """Random models log P(next | token before last, last) over {EOS, A, B}; PAD and BOS are
    never produced. Example b uses model `state["model"][b]`.

    The state holds the token before the last, so a beam search that reorders beams without
    reordering the state gets the wrong probabilities.
    """
    rng = np.random.default_rng(seed)
    logits = np.full((num_models, V, V, V), -np.inf)
    logits[..., [EOS, A, B_]] = 1.5 * rng.normal(size=(num_models, V, V, 3))
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    table = jnp.asarray(logp, jnp.float32)

    def step_fn(state, tokens_B):
        logits_BV = table[state["model"], state["before"], tokens_B]
        return logits_BV, {**state, "before": tokens_B}

    return step_fn, logp


# Six examples: two models, each with three different (pretend) tokens before BOS.
STATE = {
    "model": jnp.array([0, 0, 0, 1, 1, 1], jnp.int32),
    "before": jnp.array([PAD, A, B_] * 2, jnp.int32),
}


def brute_force(logp, model, before, max_len, alpha):
    """Every EOS-terminated sequence of at most max_len tokens, best first: [(score, tokens)]."""
    scored = []
    for n in range(max_len):
        for body in itertools.product([A, B_], repeat=n):
            tokens = (*body, EOS)
            context, total = (before, BOS), 0.0
            for tok in tokens:
                total += logp[model, context[0], context[1], tok]
                context = (context[1], tok)
            scored.append((total / ((5.0 + len(tokens)) / 6.0) ** alpha, tokens))
    return sorted(scored, reverse=True)


def _beam(step_fn, beam_size, max_len, alpha):
    return jax.jit(
        functools.partial(
            decoding.beam_search,
            step_fn,
            beam_size=beam_size,
            bos_id=BOS,
            eos_id=EOS,
            max_len=max_len,
            alpha=alpha,
        )
    )


def _examples():
    return enumerate(zip(np.asarray(STATE["model"]), np.asarray(STATE["before"]), strict=True))


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.5])
def test_wide_beam_search_finds_the_exact_n_best_list(alpha):
    step_fn, logp = second_order_model(0)
    max_len, W = 4, 24  # 24 >= all 3 · 2³ extensions of the 8 longest prefixes: nothing pruned
    seqs_BWL, scores_BW = _beam(step_fn, W, max_len, alpha)(STATE)
    for b, (model, before) in _examples():
        expected = brute_force(logp, model, before, max_len, alpha)
        assert len(expected) == 15
        np.testing.assert_allclose(scores_BW[b, :15], [s for s, _ in expected], rtol=1e-5)
        for w, (_, tokens) in enumerate(expected):
            padded = list(tokens) + [PAD] * (max_len - len(tokens))
            assert list(np.asarray(seqs_BWL[b, w])) == padded
        assert np.all(np.asarray(scores_BW[b, 15:]) == -np.inf)


def test_beam_search_with_a_small_beam_finds_the_best_sequence():
    step_fn, logp = second_order_model(2)
    seqs_BWL, scores_BW = _beam(step_fn, 3, 5, 0.6)(STATE)
    for b, (model, before) in _examples():
        best_score, best = brute_force(logp, model, before, 5, 0.6)[0]
        assert scores_BW[b, 0] <= best_score + 1e-5
        if np.isclose(scores_BW[b, 0], best_score, atol=1e-5):
            assert tuple(np.asarray(seqs_BWL[b, 0, : len(best)])) == best
    assert np.all(np.diff(np.asarray(scores_BW), axis=1) <= 0)


def test_beam_one_equals_greedy():
    step_fn, _ = second_order_model(3, num_models=6)
    greedy = jax.jit(
        functools.partial(decoding.greedy, step_fn, bos_id=BOS, eos_id=EOS, max_len=6)
    )(STATE)
    seqs_BWL, _ = _beam(step_fn, 1, 6, 0.0)(STATE)
    np.testing.assert_array_equal(seqs_BWL[:, 0], greedy)


def first_order_model(table):
    table = jnp.log(jnp.asarray(table, jnp.float32))

    def step_fn(state, tokens_B):
        return table[tokens_B], state

    return step_fn


def test_length_penalty_trades_probability_for_length():
    # From BOS: EOS 0.5, A 0.5; from A: EOS 0.95, A 0.05. Raw log P prefers [EOS] (-0.69) to
    # [A, EOS] (-0.74); with α = 2, lp(2) = (7/6)² = 1.36 and -0.74 / 1.36 = -0.55 wins.
    table = np.zeros((V, V))
    table[BOS, [EOS, A]] = 0.5
    table[A, [EOS, A]] = [0.95, 0.05]
    table[EOS, EOS] = table[B_, EOS] = table[PAD, EOS] = 1.0
    step_fn = first_order_model(table)
    state = {"unused": jnp.zeros((1,))}
    seqs, scores = _beam(step_fn, 2, 4, 0.0)(state)
    assert list(np.asarray(seqs[0, 0])) == [EOS, PAD, PAD, PAD]
    np.testing.assert_allclose(scores[0, 0], np.log(0.5), rtol=1e-6)
    seqs, scores = _beam(step_fn, 2, 4, 2.0)(state)
    assert list(np.asarray(seqs[0, 0])) == [A, EOS, PAD, PAD]
    np.testing.assert_allclose(scores[0, 0], np.log(0.5 * 0.95) / (7 / 6) ** 2, rtol=1e-6)
    np.testing.assert_allclose(decoding.length_penalty(3, 0.6), (8 / 6) ** 0.6, rtol=1e-6)


@pytest.mark.parametrize("fn", [jax.jit, lambda f: f], ids=["jit", "eager"])
def test_greedy_pads_after_eos(fn):
    # From BOS: A; from A: B; from B: EOS. Every example reads A B EOS then padding.
    table = np.full((V, V), 1e-3)
    table[BOS, A] = table[A, B_] = table[B_, EOS] = table[EOS, EOS] = 1.0
    step_fn = first_order_model(table)
    greedy = fn(functools.partial(decoding.greedy, step_fn, bos_id=BOS, eos_id=EOS, max_len=5))
    np.testing.assert_array_equal(greedy(STATE), [[A, B_, EOS, PAD, PAD]] * 6)


def test_top_k_one_and_vanishing_temperature_sample_greedily():
    step_fn, _ = second_order_model(1)
    kwargs = dict(bos_id=BOS, eos_id=EOS, max_len=6)
    greedy = decoding.greedy(step_fn, STATE, **kwargs)

    @functools.partial(jax.jit, static_argnames=("temperature", "top_k"))
    def sample(rng, temperature, top_k):
        return decoding.sample(step_fn, STATE, rng, temperature=temperature, top_k=top_k, **kwargs)

    for i in range(3):
        rng = jax.random.PRNGKey(i)
        np.testing.assert_array_equal(sample(rng, 1.0, 1), greedy)
        np.testing.assert_array_equal(sample(rng, 1e-4, None), greedy)
        np.testing.assert_array_equal(sample(rng, 0.0, None), greedy)


def test_top_p_keeps_the_nucleus_and_samples_in_proportion():
    probs = np.array([0.05, 0.5, 0.1, 0.2, 0.15])
    logits_1V = jnp.log(jnp.asarray(probs, jnp.float32))[None]
    # Sorted 0.5, 0.2, 0.15 (cumulative 0.85) is the smallest set reaching 0.8, or 0.6.
    for top_p, nucleus in [(0.8, {1, 3, 4}), (0.6, {1, 3}), (0.4, {1}), (1.0, set(range(5)))]:
        kept = np.isfinite(np.asarray(decoding.filter_logits(logits_1V, top_p=top_p)[0]))
        assert set(np.flatnonzero(kept)) == nucleus, top_p
    kept = np.isfinite(np.asarray(decoding.filter_logits(logits_1V, top_k=2)[0]))
    assert set(np.flatnonzero(kept)) == {1, 3}

    filtered = decoding.filter_logits(jnp.repeat(logits_1V, 20000, axis=0), top_p=0.8)
    draws = np.asarray(jax.random.categorical(jax.random.PRNGKey(0), filtered))
    frequencies = np.bincount(draws, minlength=5) / draws.size
    expected = np.where(np.isin(np.arange(5), [1, 3, 4]), probs, 0.0) / 0.85
    np.testing.assert_allclose(frequencies, expected, atol=0.015)


def test_bad_arguments_raise():
    step_fn, _ = second_order_model(0)
    with pytest.raises(ValueError, match="beam_size"):
        decoding.beam_search(step_fn, STATE, beam_size=0, bos_id=BOS, eos_id=EOS, max_len=3)
    with pytest.raises(ValueError, match="batch size"):
        decoding.greedy(
            step_fn,
            {"a": jnp.zeros(2), "b": jnp.zeros(3)},
            bos_id=BOS,
            eos_id=EOS,
            max_len=3,
        )
    with pytest.raises(ValueError, match="top_p"):
        decoding.filter_logits(jnp.zeros((1, 3)), top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        decoding.sample(
            step_fn,
            STATE,
            jax.random.PRNGKey(0),
            bos_id=BOS,
            eos_id=EOS,
            max_len=3,
            temperature=-1.0,
        )
