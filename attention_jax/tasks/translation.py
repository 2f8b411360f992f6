"""Translation with an encoder-decoder: the Transformer or the RNN with (or without) attention.

    task = create("transformer", "small", vocab_size, train_config, label_smoothing=0.1)
    loss, metrics = task.loss(params, batch, rng, train=True)       # teacher forcing
    hypotheses = task.translate(params, batches, bos_id=..., eos_id=...)  # beam search
    weights_NTS = task.alignment(params, src_S, tgt_in_T)          # for plots

A batch holds "inputs" (source ids, 0-padded) and "targets" ([BOS] y₁ … yₙ [EOS], 0-padded, as
`data.translation.pair_batches` makes them); the decoder reads `targets[:, :-1]` and predicts
`targets[:, 1:]`. Both model families share one decoding interface (`start_decoding`) and one
way to read their source × target attention (`cross_attention_weights`).

B batch, S source length, T target length, N heads, L decoded length.
"""

import dataclasses
import functools
import inspect

import jax
import matplotlib.image
import numpy as np

from attention_jax import decoding, viz
from attention_jax.models import seq2seq_rnn, transformer
from attention_jax.models.common import PAD_ID
from attention_jax.tasks.base import Task, with_compute_dtype
from attention_jax.tasks.losses import sequence_cross_entropy

MODELS = {
    "transformer": (transformer.TransformerConfig, transformer.Transformer),
    "rnn": (seq2seq_rnn.Seq2SeqRNNConfig, seq2seq_rnn.Seq2SeqRNN),
}


@dataclasses.dataclass(frozen=True)
class Translation(Task):
    """Teacher-forced training with label smoothing ε (Vaswani et al. section 5.4; 0 for RNNs).

    Attributes:
      label_smoothing: ε of the training loss, in [0, 1).
    """

    label_smoothing: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")

    def inputs(self, batch):
        return batch["inputs"], batch["targets"][:, :-1]

    def loss(self, params, batch, rng, *, train):
        logits_BTV = self.apply(params, batch, rng, train=train)
        labels_BT = batch["targets"][:, 1:]
        return sequence_cross_entropy(
            logits_BTV, labels_BT, labels_BT != PAD_ID, label_smoothing=self.label_smoothing
        )

    def translate(
        self, params, batches, *, bos_id, eos_id, beam_size=4, alpha=0.6, extra_decode_len=16
    ) -> list[list[int]]:
        """Beam search over every batch of `batches` (`PairBatches` without shuffling): the best
        hypothesis of each real pair, without EOS, up to `extra_decode_len` pieces longer than
        the batch's padded source."""

        @functools.partial(jax.jit, static_argnums=2)
        def decode(params, src_BS, max_len):
            step_fn, state = self.model.start_decoding(params, src_BS, max_len)
            sequences_BWL, _ = decoding.beam_search(
                step_fn,
                state,
                beam_size=beam_size,
                bos_id=bos_id,
                eos_id=eos_id,
                max_len=max_len,
                alpha=alpha,
            )
            return sequences_BWL[:, 0]

        hypotheses = []
        for batch in batches:
            max_len = batch["inputs"].shape[1] + extra_decode_len
            for row in np.asarray(decode(params, batch["inputs"], max_len)).tolist():
                hypotheses.append(row[: row.index(eos_id)] if eos_id in row else row)
        return hypotheses[: batches.num_pairs]

    def alignment(self, params, src_S, tgt_in_T) -> np.ndarray:
        """Teacher-forced source × target attention of one pair: weights_NTS (N = 1 for the
        RNN, the last decoder layer's cross-attention heads for the Transformer)."""
        src_1S, tgt_in_1T = np.asarray(src_S)[None], np.asarray(tgt_in_T)[None]
        return np.asarray(self.model.cross_attention_weights(params, src_1S, tgt_in_1T)[0])

    def plot_alignments(self, params, tokenizer, pairs, hypotheses, out_dir, split, writer, step):
        """Heatmaps of source pieces × the model's own output pieces for each of `pairs`, as PNG
        files `<out_dir>/<split>_<i>.png` and as images in the TensorBoard `writer`."""
        out_dir.mkdir(parents=True, exist_ok=True)

        def pieces(ids):
            return [tokenizer.id_to_token(i) for i in ids]

        for i, ((source, _), hypothesis) in enumerate(zip(pairs, hypotheses, strict=False)):
            src = tokenizer.encode(source) + [tokenizer.sep_id]
            hyp = hypothesis + [tokenizer.sep_id]
            weights_NTS = self.alignment(params, src, [tokenizer.cls_id] + hyp[:-1])
            path = out_dir / f"{split}_{i}.png"
            if len(weights_NTS) == 1:
                viz.plot_attention(weights_NTS[0], pieces(src), pieces(hyp), path, title=source)
            else:
                viz.plot_attention_heads(weights_NTS, pieces(src), pieces(hyp), path, title=source)
            writer.add_image(
                f"alignment/{i}", matplotlib.image.imread(path), step, dataformats="HWC"
            )


def model_preset(model: str, model_size: str):
    """(the config preset `(vocab_size, **overrides) -> config`, the model class), or a
    one-line ValueError naming the choices; scripts call it before preparing any data."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {tuple(MODELS)}, got {model!r}")
    config_class, model_class = MODELS[model]
    presets = [name for name in dir(config_class) if _is_preset(config_class, name)]
    if model_size not in presets:
        raise ValueError(
            f"{config_class.__name__} has no preset {model_size!r}; presets: {', '.join(presets)}"
        )
    return getattr(config_class, model_size), model_class


def _is_preset(config_class, name) -> bool:
    return not name.startswith("_") and isinstance(
        inspect.getattr_static(config_class, name), classmethod
    )


def create(
    model: str, model_size: str, vocab_size: int, train_config, *, label_smoothing=0.0, overrides=()
) -> Translation:
    """The task for a preset ("tiny", "small", "base", ...) of the "transformer" or "rnn" family,
    computing in the training config's dtype; `overrides` set preset fields (None keeps one)."""
    preset, model_class = model_preset(model, model_size)
    overrides = {k: v for k, v in dict(overrides).items() if v is not None}
    model_config = with_compute_dtype(preset(vocab_size, **overrides), train_config)
    return Translation(model_class(model_config), label_smoothing=label_smoothing)
