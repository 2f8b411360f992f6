"""The SASE BiLSTM: our scan (`models.recurrent.rnn_layer`) vs Flax `nn.RNN` of
`nn.OptimizedLSTMCell` (two `nn.RNN`s in `nn.Bidirectional`) vs PyTorch `nn.LSTM`
(bidirectional, packed sequences), plus our whole SASE training step for scale.

Same sizes for all: B sentences of up to S tokens (lengths drawn uniformly in [S/4, S]),
M-d inputs, U units per direction, float32, forward + backward of the sum of the annotations
(the cost a training step pays for the recurrence). Padding is masked in all three: our scans
keep the state through padding (the backward one starts at each row's last token), Flax takes
`seq_lengths` (reversing each row within its length), PyTorch packs the batch. Time: median of
a few runs after compilation, the three BiLSTMs interleaved in rotating order so that load from
other processes hits all alike (the whole training step, a different measurement, in its own
runs after them).

    .venv/bin/python benchmarks/sase.py [--batch_size 64] [--length 32] [--repeats 21]
"""

import argparse
import os
import pathlib
import statistics

import flax.linen as nn
import harness
import jax
import numpy as np
import optax
import torch

from attention_jax import training
from attention_jax.models.recurrent import rnn_layer
from attention_jax.models.sase import SASEConfig
from attention_jax.tasks import sase

RESULTS = pathlib.Path(__file__).parent / "results" / "sase.md"


class OurBiLSTM(nn.Module):
    config: SASEConfig  # rnn_layer reads its dtype and param_dtype

    @nn.compact
    def __call__(self, x_BSM, valid_BS):
        U = self.config.hidden_size
        return rnn_layer(self, "lstm", x_BSM, valid_BS, layer=0, directions=2, hidden_size=U)[0]


class FlaxBiLSTM(nn.Module):
    hidden_size: int

    @nn.compact
    def __call__(self, x_BSM, lengths_B):
        cell = nn.OptimizedLSTMCell
        # The backward RNN reverses each row within its length and gives outputs in input order.
        bidirectional = nn.Bidirectional(
            nn.RNN(cell(self.hidden_size)),
            nn.RNN(cell(self.hidden_size), reverse=True, keep_order=True),
        )
        return bidirectional(x_BSM, seq_lengths=lengths_B)


def jax_step(model, params, *inputs):
    """Jitted forward + backward of Σ annotations; returns a callable with no arguments."""
    grad = jax.jit(jax.grad(lambda p, *xs: model.apply({"params": p}, *xs).sum()))
    return lambda: jax.block_until_ready(grad(params, *inputs))


def torch_step(x_BSM, lengths_B, U):
    lstm = torch.nn.LSTM(x_BSM.shape[-1], U, batch_first=True, bidirectional=True)
    x = torch.from_numpy(np.asarray(x_BSM))
    lengths = torch.from_numpy(np.asarray(lengths_B))

    def run():
        lstm.zero_grad()
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            x, lengths, batch_first=True, enforce_sorted=False
        )
        out, _ = lstm(packed)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True)
        out.sum().backward()

    return run


def sase_train_step(B, S, lengths_B, M, U, vocab_size=16000):
    """Our whole SASE training step (sst2 preset, Adam) on a batch of random token ids."""
    overrides = {"embed_size": M, "hidden_size": U}
    task = sase.create("sst2", vocab_size, training.default_config(), overrides=overrides)
    tokens_BS = np.random.default_rng(1).integers(2, vocab_size, (B, S)).astype(np.int32)
    tokens_BS[np.arange(S)[None] >= lengths_B[:, None]] = 0
    batch = {"tokens": tokens_BS, "label": np.zeros(B, np.int32), "weight": np.ones(B, np.float32)}
    params = nn.unbox(task.model.init(jax.random.PRNGKey(0), tokens_BS)["params"])
    tx = optax.adam(1e-3)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, batch):
        grads = jax.grad(lambda p: task.loss(p, batch, jax.random.PRNGKey(0), train=True)[0])(
            params
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    return lambda: jax.block_until_ready(step(params, opt_state, batch))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--embed_size", type=int, default=300)
    parser.add_argument("--hidden_size", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    B, S, M, U = args.batch_size, args.length, args.embed_size, args.hidden_size
    torch.set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(0)
    lengths_B = rng.integers(S // 4, S + 1, B).astype(np.int32)
    lengths_B[0] = S
    x_BSM = rng.normal(size=(B, S, M)).astype(np.float32)
    valid_BS = np.arange(S)[None] < lengths_B[:, None]
    x_BSM[~valid_BS] = 0.0

    ours = OurBiLSTM(SASEConfig(2, hidden_size=U))
    flax_model = FlaxBiLSTM(U)
    variants = {
        "ours: rnn_layer, one lax.scan per direction": jax_step(
            ours,
            nn.unbox(ours.init(jax.random.PRNGKey(0), x_BSM, valid_BS)["params"]),
            x_BSM,
            valid_BS,
        ),
        "Flax nn.Bidirectional(nn.RNN(OptimizedLSTMCell))": jax_step(
            flax_model,
            flax_model.init(jax.random.PRNGKey(0), x_BSM, lengths_B)["params"],
            x_BSM,
            lengths_B,
        ),
        "PyTorch nn.LSTM(bidirectional=True), packed": torch_step(x_BSM, lengths_B, U),
    }
    whole_step = {
        "ours: whole SASE train step (sst2 preset, Adam)": sase_train_step(B, S, lengths_B, M, U)
    }
    load_before = os.getloadavg()[0]
    for run in [*variants.values(), *whole_step.values()]:
        run()  # compile / warm up
    times = harness.alternate(variants, args.repeats) | harness.alternate(whole_step, args.repeats)
    load_after = os.getloadavg()[0]
    medians = {name: statistics.median(t) for name, t in times.items()}
    ours_time = medians["ours: rnn_layer, one lax.scan per direction"]
    rows = [
        f"| {name} | {1e3 * medians[name]:.1f} | {1e3 * min(t):.1f}-{1e3 * max(t):.1f} | "
        f"{B * S / medians[name]:,.0f} | {medians[name] / ours_time:.2f}× |"
        for name, t in times.items()
    ]
    text = "\n".join(
        [
            "# SASE BiLSTM: our scan vs Flax nn.RNN vs PyTorch nn.LSTM",
            "",
            f"`make bench-sase`. Forward + backward of a bidirectional LSTM, B = {B} sentences of "
            f"up to S = {S} tokens (lengths uniform in [{S // 4}, {S}], padding masked in all), "
            f"M = {M} inputs, U = {U} units per direction, float32; the last row is our whole SASE "
            f"training step (embeddings, BiLSTM, r = 4 hops, MLP 512, penalty, Adam) at the same "
            f"sizes. Time: median (and range) of {args.repeats} runs after compilation, the three "
            f"BiLSTMs interleaved, then the whole step alone. "
            f"Device: {jax.device_count()} × {jax.devices()[0].platform}, {os.cpu_count()} CPU "
            f"cores, PyTorch {torch.__version__} with {torch.get_num_threads()} threads; 1-minute "
            f"load average {load_before:.1f} before / {load_after:.1f} after (shared machine).",
            "",
            "| variant | time (ms) | range (ms) | tokens/s (padded) | time / ours |",
            "|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
