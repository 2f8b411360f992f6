"""Few-shot scoring speed: multiple-choice prompts per second, with and without prefix reuse.

Every prompt has C candidates; scoring a candidate is log P(candidate | prompt). Compared on the
same B prompts of about S tokens (left-padded) with C candidates of about K tokens each:

- reuse: `evaluation.few_shot.log_likelihoods` — the prompts go through the key/value cache
  once and every candidate continues from its prompt's cache (one jitted call per batch);
- full rows: the same call with `reuse_prefix=False` — every prompt + candidate row runs in
  full, as lm-evaluation-harness scores a batch of requests;
- HF Flax full rows: `FlaxGPT2LMHeadModel` on the same B·C rows and weights (exported with
  `interop.save_hf_gpt2`), log-probabilities gathered in the same jitted function;
- one call per candidate: each prompt + candidate scored alone (batch 1).

All in one process, compiled first, then rounds that time each implementation in turn (the
order rotating); figures are medians with the min–max. Scores must agree with reuse's.

    flock /tmp/heavy.lock .venv/bin/python benchmarks/few_shot.py [--rounds 3]
"""

import argparse
import os
import pathlib
import platform
import statistics
import tempfile

import flax.linen as nn
import harness
import jax
import jax.numpy as jnp
import numpy as np

from attention_jax.evaluation import few_shot
from attention_jax.interop import save_hf_gpt2
from attention_jax.models.gpt import GPT, GPTConfig

RESULTS = pathlib.Path(__file__).parent / "results" / "few_shot.md"
B, C, S, K = 16, 4, 180, 12  # prompts, candidates, prompt and candidate lengths (± 25%)


def workload(vocab_size, seed=0):
    rng = np.random.default_rng(seed)

    def ids(n):
        return rng.integers(1, vocab_size, int(n)).tolist()

    prompts = [ids(n) for n in rng.integers(S * 3 // 4, S * 5 // 4, B)]
    candidates = [[ids(n) for n in rng.integers(K * 3 // 4, K * 5 // 4, C)] for _ in prompts]
    return prompts, candidates


def hf_full_rows(config, params, prompts, candidates):
    """transformers' Flax GPT-2 on the B·C rows prompt + candidate, left-padded."""
    from transformers import FlaxGPT2LMHeadModel

    with tempfile.TemporaryDirectory() as folder:
        save_hf_gpt2(config, params, folder)
        model = FlaxGPT2LMHeadModel.from_pretrained(folder)
    rows = [(p, c) for p, cs in zip(prompts, candidates, strict=True) for c in cs]
    L = max(len(p) + len(c) for p, c in rows)
    tokens_XL, mask_XL, targets_XL = (np.zeros((len(rows), L), np.int32) for _ in range(3))
    for x, (p, c) in enumerate(rows):
        tokens_XL[x, L - len(p) - len(c) :] = p + c
        mask_XL[x, L - len(p) - len(c) :] = 1
        targets_XL[x, L - len(c) :] = 1
    positions_XL = np.maximum(np.cumsum(mask_XL, 1) - 1, 0)

    @jax.jit
    def score(params):
        logits_XLV = model(tokens_XL, mask_XL, positions_XL, params=params).logits
        logp_XLV = jax.nn.log_softmax(logits_XLV[:, :-1].astype(jnp.float32))
        logp_XL = jnp.take_along_axis(logp_XLV, tokens_XL[:, 1:, None], -1)[..., 0]
        return (logp_XL * targets_XL[:, 1:]).sum(-1).reshape(B, C)

    return lambda: list(np.asarray(score(model.params), np.float64))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    config = GPTConfig.small(4096, dropout_rate=0.0, attention_dropout_rate=0.0)
    model = GPT(config)
    params = nn.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32)))["params"]
    prompts, candidates = workload(config.vocab_size)

    def ours(reuse_prefix):
        return lambda: few_shot.log_likelihoods(
            model, params, prompts, candidates, batch_size=B, reuse_prefix=reuse_prefix
        )

    def per_candidate():
        return [
            np.array(
                [
                    few_shot.log_likelihoods(model, params, [p], [[c]], batch_size=1)[0][0]
                    for c in cs
                ]
            )
            for p, cs in zip(prompts, candidates, strict=True)
        ]

    implementations = {
        "attention_jax, prefix reused": ours(True),
        "attention_jax, full rows": ours(False),
        "HF FlaxGPT2LMHeadModel, full rows": hf_full_rows(config, params, prompts, candidates),
        "attention_jax, one call per candidate": per_candidate,
    }
    names = list(implementations)
    reference = implementations[names[0]]()
    differences = {}
    for name, fn in implementations.items():  # compiles every shape before timing
        differences[name] = max(np.abs(a - b).max() for a, b in zip(fn(), reference, strict=True))
    load_before = os.getloadavg()[0]
    seconds = harness.alternate(implementations, args.rounds)
    load_after = os.getloadavg()[0]

    reused = statistics.median(seconds[names[0]])
    lines = [
        "# Few-shot scoring: prompts/s with and without prefix reuse",
        "",
        f"`make bench-few-shot` on {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"jax {jax.__version__}, float32. GPT 'small' (4 blocks, D = 256, V = 4,096, random "
        f"weights); B = {B} prompts of {S} ± 25% tokens, each with C = {C} candidates of "
        f"{K} ± 25% tokens. {args.rounds} rounds, order rotating; 1-minute load average "
        f"{load_before:.1f} before, {load_after:.1f} after.",
        "",
        "| implementation | s per B prompts: median (min–max) | prompts/s | time ÷ prefix reused "
        "| max |Δ log-likelihood| |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        median = statistics.median(seconds[name])
        lines.append(
            f"| {name} | {median:.3f} ({min(seconds[name]):.3f}–{max(seconds[name]):.3f}) | "
            f"{B / median:.1f} | {median / reused:.2f}× | {differences[name]:.1e} |"
        )
    lines += [
        "",
        "- prefix reused: the prompt's keys and values are computed once per prompt, not once "
        "per candidate; the candidates' own tokens are the only rows that run C times.",
        "- per candidate: B · C jitted calls of batch 1 (the shapes compiled before timing).",
    ]
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
