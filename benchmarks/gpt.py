"""GPT-2 small training step and generation: ours against Hugging Face Flax and PyTorch, one run.

Train: the same step for every implementation on the same batch of B × T random tokens and the
same initial weights (ours, written with `interop.save_hf_gpt2` and read back by each library):
next-token cross-entropy with dropout on (0.1, as GPT-2), gradients and AdamW — ours through
`tasks.language_model.LanguageModeling` (whose packed-batch segment mask the others skip) and
optax, `FlaxGPT2LMHeadModel` with its own jitted step and optax, and PyTorch `GPT2LMHeadModel`
with `torch.optim.AdamW`. MFU is `models.gpt.flops_per_token(config, T)` × tokens/s ÷ the FLOP/s
of a jitted 4096³ float32 matmul measured in the same rounds.

Generate: greedy continuation of B prompts of S tokens by exactly L new tokens (EOS never
matches), the prompt read in the timed call: ours with the key/value cache, ours recomputing the
whole prefix at every step (`GPT.start_decoding(use_cache=False)`), and transformers' Flax
`generate` (its own cache), each one jitted call.

Fairness (`harness`): each implementation and the matmul in its own process, built and compiled
one after another, then rounds in rotating order in which each runs a block of timed calls while
the others are idle. Figures are medians with the min–max over every timed call.

    .venv/bin/python benchmarks/gpt.py [--rounds 3]

B batch, T training length, S prompt length, L new tokens, V vocabulary.
"""

import argparse
import os
import pathlib
import platform
import tempfile
import time
from typing import NamedTuple

import harness
import jax
import jax.numpy as jnp
import numpy as np
import optax

from attention_jax import decoding
from attention_jax.interop import load_hf_gpt2, save_hf_gpt2
from attention_jax.models.gpt import GPT, GPTConfig, flops_per_token
from attention_jax.tasks.language_model import LanguageModeling

RESULTS = pathlib.Path(__file__).parent / "results" / "gpt.md"
LEARNING_RATE, WEIGHT_DECAY = 3e-4, 0.1
NEVER = -1  # an EOS id no token has, so every generation runs to L tokens (transformers: V)


class Shape(NamedTuple):
    config: GPTConfig
    train_B: int
    train_T: int
    gen_B: int
    gen_P: int
    gen_L: int
    matmul_N: int  # the peak's matmul is N × N times N × N


SHAPES = {
    # GPT-2 small (124M); T = 256 rather than 1,024 keeps a step to seconds on this CPU.
    "gpt2": Shape(GPTConfig.gpt2(), 4, 256, 4, 32, 64, 4096),
    "tiny": Shape(GPTConfig.tiny(503), 2, 32, 2, 8, 8, 512),  # checks the script in a minute
}


def tokens(shape, B, T, seed):
    vocab_size = shape.config.vocab_size
    return np.random.default_rng(seed).integers(0, vocab_size, (B, T), dtype=np.int32)


def inputs_and_targets(shape):
    """(inputs_BT, targets_BT): B rows of T + 1 random tokens, each target the next input."""
    tokens_BT = tokens(shape, shape.train_B, shape.train_T + 1, seed=0)
    return tokens_BT[:, :-1], tokens_BT[:, 1:]


def adamw():
    return optax.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY)


class JaxTrain:
    """One jitted AdamW step over `loss_fn(params, inputs_BT, targets_BT, rng)`, state donated."""

    def __init__(self, shape, params, loss_fn):
        tx = adamw()
        self.state = (params, tx.init(params))
        self.inputs_BT, self.targets_BT = (jnp.asarray(x) for x in inputs_and_targets(shape))

        def train_step(state, inputs_BT, targets_BT, rng):
            params, opt_state = state
            loss, grads = jax.value_and_grad(loss_fn)(params, inputs_BT, targets_BT, rng)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        self.train_step = jax.jit(train_step, donate_argnums=0)
        self.threads = harness.xla_threads()

    def run(self, i):
        self.state, loss = self.train_step(
            self.state, self.inputs_BT, self.targets_BT, jax.random.key(i)
        )
        return float(loss)


class OursTrain(JaxTrain):
    name = "attention_jax GPT"

    def __init__(self, shape, folder):
        config, params = load_hf_gpt2(folder)
        task = LanguageModeling(GPT(config))
        B, T = shape.train_B, shape.train_T
        segment_ids_BT = jnp.ones((B, T), jnp.int32)
        positions_BT = jnp.broadcast_to(jnp.arange(T), (B, T))

        def loss_fn(params, inputs_BT, targets_BT, rng):
            batch = dict(
                inputs=inputs_BT,
                targets=targets_BT,
                segment_ids=segment_ids_BT,
                positions=positions_BT,
            )
            return task.loss(params, batch, rng, train=True)[0]

        super().__init__(shape, jax.tree.map(jnp.asarray, params), loss_fn)


class FlaxTrain(JaxTrain):
    name = "HF FlaxGPT2LMHeadModel"

    def __init__(self, shape, folder):
        import transformers

        model = transformers.FlaxGPT2LMHeadModel.from_pretrained(folder, from_pt=True)

        def loss_fn(params, inputs_BT, targets_BT, rng):
            logits_BTV = model(inputs_BT, params=params, dropout_rng=rng, train=True).logits
            return optax.softmax_cross_entropy_with_integer_labels(
                logits_BTV.astype(jnp.float32), targets_BT
            ).mean()

        super().__init__(shape, model.params, loss_fn)


class TorchTrain:
    name = "HF PyTorch GPT2LMHeadModel"

    def __init__(self, shape, folder):
        import torch
        import transformers

        torch.manual_seed(0)
        self.torch = torch
        self.model = transformers.GPT2LMHeadModel.from_pretrained(folder).train()
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY
        )
        self.inputs_BT, self.targets_BT = (
            torch.from_numpy(x).long() for x in inputs_and_targets(shape)
        )
        attention = self.model.config._attn_implementation
        self.threads = f"{harness.torch_threads(torch)}, {attention} attention"

    def run(self, i):
        logits_BTV = self.model(self.inputs_BT).logits
        loss = self.torch.nn.functional.cross_entropy(
            logits_BTV.flatten(0, 1), self.targets_BT.flatten()
        )
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()


class JaxGenerate:
    """One jitted `generate(params, prompt_BP) -> new tokens_BL` per call."""

    def __init__(self, shape, params, generate):
        self.params = params
        self.prompt_BP = jnp.asarray(tokens(shape, shape.gen_B, shape.gen_P, seed=1))
        self.generate = jax.jit(generate)
        self.threads = harness.xla_threads()

    def run(self, i):
        return np.asarray(self.generate(self.params, self.prompt_BP))


class OursGenerate(JaxGenerate):
    use_cache = True
    name = "attention_jax GPT, key/value cache"

    def __init__(self, shape, folder):
        config, params = load_hf_gpt2(folder)
        model = GPT(config)
        L = shape.gen_L

        def generate(params, prompt_BP):
            step_fn, state = model.start_decoding(params, prompt_BP, L, use_cache=self.use_cache)
            return decoding.greedy(step_fn, state, bos_id=prompt_BP[:, -1], eos_id=NEVER, max_len=L)

        super().__init__(shape, jax.tree.map(jnp.asarray, params), generate)


class OursRecompute(OursGenerate):
    use_cache = False
    name = "attention_jax GPT, recomputed prefix"


class FlaxGenerate(JaxGenerate):
    name = "HF FlaxGPT2LMHeadModel.generate"

    def __init__(self, shape, folder):
        import transformers

        model = transformers.FlaxGPT2LMHeadModel.from_pretrained(folder, from_pt=True)

        def generate(params, prompt_BP):
            out = model.generate(
                prompt_BP,
                params=params,
                max_new_tokens=shape.gen_L,
                do_sample=False,
                pad_token_id=0,
                eos_token_id=shape.config.vocab_size,  # it refuses negative ids
            )
            return out.sequences[:, shape.gen_P :]

        super().__init__(shape, model.params, generate)


def train_table(shape, results, errors):
    """Markdown rows of the training step, and the FLOPs per token that MFU counts."""
    peak, peak_cells = harness.matmul_peak(results, shape.matmul_N)
    flops = flops_per_token(shape.config, shape.train_T)
    rates, cells = harness.shared_cells(results, shape.train_B * shape.train_T, OursTrain)
    lines = [
        "| implementation | s/step: median (min–max) | tokens/s | ours ÷ it | CPU s/step | MFU "
        "| loss, step 1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for cls, (_, first_loss, _) in results.items():
        lines.append(f"{cells[cls]} {flops * rates[cls] / peak:.0%} | {first_loss:.3f} |")
    lines += [f"| {name} | failed: `{error}` | | | | | |" for name, error in errors.items()]
    lines.append(f"{peak_cells} | | | |")
    return lines, flops


def generate_table(shape, results, errors):
    """Markdown rows of generation."""
    _, cells = harness.shared_cells(results, shape.gen_B * shape.gen_L, OursGenerate)
    reference = results[OursGenerate][1] if OursGenerate in results else None
    lines = [
        "| implementation | s/generate: median (min–max) | new tokens/s | ours (cache) ÷ it "
        "| CPU s/generate | tokens equal to ours (cache) |",
        "|---|---|---|---|---|---|",
    ]
    for cls, (_, tokens_BL, _) in results.items():
        equal = f"{np.mean(tokens_BL == reference):.0%}" if reference is not None else "—"
        lines.append(f"{cells[cls]} {equal} |")
    lines += [f"| {name} | failed: `{error}` | | | | |" for name, error in errors.items()]
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="gpt2", choices=list(SHAPES))
    parser.add_argument("--rounds", type=int, default=3, help="rounds of timed blocks")
    parser.add_argument("--steps", type=int, default=2, help="timed train steps per block")
    parser.add_argument("--only-ours", action="store_true", help="skip the Hugging Face peers")
    args = parser.parse_args()
    shape = SHAPES[args.shape]
    c = shape.config
    peers = not args.only_ours
    train_classes = [OursTrain, *([FlaxTrain, TorchTrain] if peers else [])]
    generate_classes = [OursGenerate, OursRecompute, *([FlaxGenerate] if peers else [])]

    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        params = jax.jit(GPT(c).init)(jax.random.key(0), jnp.zeros((1, 1), jnp.int32))["params"]
        save_hf_gpt2(c, params, folder)
        del params
        print("train:", flush=True)
        peak = harness.MatmulPeak
        train = harness.run_phase(
            {cls: (shape, folder) for cls in train_classes} | {peak: (shape.matmul_N,)},
            args.rounds,
            calls={cls: args.steps for cls in train_classes} | {peak: 3},
        )
        print("generate:", flush=True)
        generate = harness.run_phase(
            {cls: (shape, folder) for cls in generate_classes},
            args.rounds,
            calls={cls: 1 for cls in generate_classes},
        )
    minutes = (time.perf_counter() - start) / 60
    conditions = harness.conditions(args.rounds, load_before, train, generate)
    train_lines, flops = train_table(shape, *train)
    text = "\n".join(
        [
            "# GPT-2: training step and generation",
            "",
            f"`make bench-gpt` ({minutes:.0f} min) on {platform.machine()}, {os.cpu_count()} CPU "
            f"cores, jax {jax.__version__}, float32. Shape {args.shape!r}: {c.num_layers} blocks, "
            f"D = {c.d_model}, {c.num_heads} heads, V = {c.vocab_size:,}, context {c.max_len}; "
            "the same initial weights in every implementation.",
            "",
            *conditions,
            "",
            f"## Training step: B = {shape.train_B}, T = {shape.train_T}, dropout "
            f"{c.dropout_rate}, AdamW",
            "",
            *train_lines,
            "",
            f"- {args.steps} timed steps per block, {args.steps * args.rounds} per implementation.",
            f"- MFU: `flops_per_token(config, {shape.train_T})` = {flops / 1e9:.2f} GFLOP (6 per "
            "matmul weight, the tied output layer's included, plus attention's 12·L·T·D) × "
            "tokens/s ÷ the matmul's median FLOP/s in the same rounds.",
            "- ours also applies the packed-document segment mask of `LanguageModeling`'s batches.",
            "",
            f"## Generation: greedy, B = {shape.gen_B} prompts of S = {shape.gen_P} tokens, "
            f"L = {shape.gen_L} new tokens",
            "",
            *generate_table(shape, *generate),
            "",
            "- one jitted call per generation, the prompt read included; one call per block; new "
            "tokens/s = B · L ÷ its time.",
            "- recomputed: every step runs the model over the whole prefix, padded to S − 1 + L.",
            "- tokens equal: greedy tokens identical to ours with the cache (random weights give "
            "near-ties, so float rounding may flip a few).",
        ]
    )
    print(text)
    if peers and args.shape == "gpt2" and (args.rounds, args.steps) == (3, 2):
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(text + "\n")
        print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
