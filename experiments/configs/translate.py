"""Machine translation on Multi30k (Elliott et al. 2016), English → German by default.

`get_config("transformer")`: the Transformer of Vaswani et al. 2017 in its Multi30k size
(`TransformerConfig.small`: N=3, d_model=256, h=4), Adam β2 = 0.98, the inverse-square-root
schedule lr = peak · min(step / warmup, (warmup / step)^0.5) (the paper's eq. 3 with
peak = d_model^-0.5 · warmup^-0.5; 1e-3 and 800 warmup steps here, as the run is short),
label smoothing 0.1, beam 4 with α = 0.6, and the parameters averaged over the last 5
checkpoints (the paper's §6.1; 200 steps apart here).
`get_config("rnn")`: a bidirectional-LSTM encoder-decoder (`Seq2SeqRNNConfig.small`) with the
attention named by `model_overrides.attention` (none, bahdanau, luong_dot, luong_general,
luong_concat), Adam with lr 1e-3 decayed linearly, gradients clipped at 1.
Both train on cased text and report cased and lowercased BLEU.
"""

import ml_collections

from attention_jax import training


def get_config(arg: str = "transformer") -> ml_collections.ConfigDict:
    if arg not in ("transformer", "rnn"):
        raise ValueError(f"translate config is 'transformer' or 'rnn', got {arg!r}")
    c = ml_collections.ConfigDict()
    c.model = arg  # "transformer" or "rnn".
    c.model_size = "small"  # A preset of TransformerConfig / Seq2SeqRNNConfig.
    # Fields of the model preset to override; None keeps the preset's value. Other fields can
    # be added here (the command line only sets fields that exist).
    c.model_overrides = ml_collections.ConfigDict()
    c.model_overrides.dropout_rate = ml_collections.config_dict.placeholder(float)
    c.label_smoothing = 0.1 if arg == "transformer" else 0.0  # ε of the loss (Vaswani 5.4).

    c.data = ml_collections.ConfigDict()
    # "multi30k" (line-aligned <split>.<lang>.gz files in manual_dir), "bible_tsv" (a verse-
    # aligned TSV in manual_dir), or a TFDS catalogue name such as "wmt14_translate/de-en".
    c.data.dataset = "multi30k"
    c.data.manual_dir = "../shared/data/multi30k"  # Folder of the local dataset's files.
    c.data.source_lang = "en"
    c.data.target_lang = "de"
    c.data.output_dir = "runs/data"  # Prepared TFDS datasets and the joint SentencePiece model.
    c.data.vocab_size = 8000  # Joint source + target SentencePiece vocabulary.
    c.data.lowercase = False  # Case-fold the training text (the German output then too).
    c.data.max_len = 64  # Training pairs with a longer side (in pieces) are dropped.
    c.data.seed = 0  # Seeds SentencePiece sampling and the batch order.

    c.eval = ml_collections.ConfigDict()
    c.eval.split = "validation"  # Split decoded and scored with BLEU after training.
    c.eval.beam_size = 4  # 1 decodes greedily.
    c.eval.alpha = 0.6  # Length penalty ((5 + |Y|) / 6)^α of Wu et al. 2016.
    c.eval.extra_decode_len = 16  # Decode up to (padded source length + this) pieces.
    c.eval.batch_size = 64  # Sentences decoded at once.
    c.eval.num_alignment_plots = 4  # First validation sentences whose alignments are plotted.
    # Decode with the mean parameters of the newest N checkpoints (1: the final one alone); the
    # loop must keep them (train.keep_checkpoints ≥ N, saved every checkpoint_every_steps).
    c.eval.average_checkpoints = 5

    c.train = training.default_config()
    c.train.workdir = ""  # Empty: runs/translate_<model>[_<attention>].
    c.train.batch_size = 128
    c.train.tokens_key = "targets"
    c.train.eval_every_steps = 1000
    c.train.checkpoint_every_steps = 200  # The last 5 span the final 800 steps.
    c.train.keep_checkpoints = 5
    c.train.log_every_steps = 100
    c.train.best_metric = "nll"
    c.train.optimizer = "adamw"  # optax's AdamW (bias-corrected Adam), no weight decay.
    if arg == "transformer":
        c.model_overrides.pre_ln = ml_collections.config_dict.placeholder(bool)
        c.train.num_train_steps = 3000  # 13 epochs; 49-95 min on the README's 2-core VMs.
        c.train.schedule = "inverse_sqrt"
        c.train.learning_rate = 1e-3
        c.train.warmup_steps = 800
        c.train.b2 = 0.98
        c.train.eps = 1e-9
    else:
        c.model_overrides.attention = "bahdanau"
        c.model_overrides.cell = ml_collections.config_dict.placeholder(str)  # "lstm" or "gru".
        c.train.num_train_steps = 3000  # 13 epochs, 40 min on 2 CPU cores.
        c.train.learning_rate = 1e-3
        c.train.warmup_steps = 200
        c.train.grad_clip_norm = 1.0
    return c
