"""GPT language-model pre-training (Radford et al. 2018, section 4.1; Radford et al. 2019).

`get_config("small")` trains a 4-block GPT (D = 256, pre-LN as GPT-2) on the World English Bible
shipped in corpora/ on a CPU in about 15 minutes (`make pretrain-gpt`): BPE SentencePiece
vocabulary of 4,096 trained on the training chapters, rows of 128 tokens, batch 16, 800 steps
(1.2 epochs) without dropout (the papers' 0.1 only slows a model that sees its data about
once), AdamW (β2 = 0.95, ε = 1e-8, weight decay 0.1 on weights and embeddings, not on
biases and norms), lr 1e-3 with 50 warmup steps then cosine decay,
gradients clipped to norm 1 — GPT-3's recipe (Brown et al. 2020, appendix B) at CPU scale.
`get_config("tiny")` is the same at the smallest size (tests). `gpt1` and `gpt2*` are the papers'
shapes (GPT-1: 512 tokens, batch 64, lr 2.5e-4, 2,000 warmup steps, cosine; GPT-2: 1,024 tokens,
batch 512) for an accelerator and a larger corpus (`--config.data.corpus_dir`).

Train short, test long (`make gpt-positions` runs it for the tiny model, rows of 64 tokens):
`--config.model_overrides.position=rope` (or learned, sinusoidal, alibi) with
`--config.eval_context_multiples="(1, 2, 4)"` reports held-out perplexity on rows 1×, 2× and 4×
the training length; `model_overrides.max_len` must cover the longest.
"""

import ml_collections
from ml_collections.config_dict import placeholder

from attention_jax import training
from attention_jax.tasks import language_model


def get_config(arg: str = "small") -> ml_collections.ConfigDict:
    language_model.check_model_size(arg)
    c = ml_collections.ConfigDict()
    c.model_size = (
        arg  # A GPTConfig preset: tiny, small, gpt1, gpt2, gpt2_medium, gpt2_large, gpt2_xl.
    )
    # GPTConfig fields to override; None keeps the preset's.
    c.model_overrides = ml_collections.ConfigDict()
    c.model_overrides.position = placeholder(str)  # learned, sinusoidal, rope or alibi.
    c.model_overrides.max_len = placeholder(int)  # The context, and the learned position table.
    c.model_overrides.dropout_rate = placeholder(float)  # Embedding and residual dropout.
    c.model_overrides.attention_dropout_rate = placeholder(float)  # On attention weights.
    c.model_overrides.attention_implementation = placeholder(str)  # xla, chunked, cudnn.
    c.eval_context_multiples = (1,)  # Held-out perplexity on rows of these multiples of seq_len.
    c.eval_batch_size = 16  # Rows per evaluation batch at 1× (divided by the multiple beyond).

    c.data = ml_collections.ConfigDict()
    c.data.corpus_dir = "corpora/web_bible"  # Folder of .txt/.txt.gz: lines, blank-line documents.
    c.data.output_dir = (
        f"runs/gpt_{arg}/tokenizer"  # The SentencePiece model trained on the corpus.
    )
    c.data.tokenizer = "bpe"  # "bpe", or "char" (a character-level language model).
    c.data.vocab_size = 4096  # SentencePiece pieces, an upper bound ("char": the corpus's).
    c.data.lowercase = False  # Case-fold the text.
    c.data.eval_fraction = 0.05  # Documents held out for perplexity (BERT's split: same seed).
    c.data.seed = 12345  # Seeds the held-out split and the tokenizer's sampling.
    c.data.seq_len = 128  # Training row length T (at most the model's max_len).

    c.train = training.default_config()
    c.train.workdir = f"runs/gpt_{arg}"
    c.train.num_train_steps = 800
    c.train.batch_size = 16
    c.train.optimizer = "adamw"
    c.train.b2 = 0.95
    c.train.eps = 1e-8
    c.train.schedule = "cosine"
    c.train.learning_rate = 1e-3
    c.train.warmup_steps = 50
    c.train.weight_decay = 0.1
    c.train.grad_clip_norm = 1.0
    c.train.eval_every_steps = 400
    c.train.num_eval_steps = None
    c.train.log_every_steps = 100
    c.train.checkpoint_every_steps = 400
    c.train.best_metric = "nll"
    c.train.tokens_key = "segment_ids"

    if arg in ("tiny", "small"):  # About one epoch: underfitting, so no dropout (see above).
        c.model_overrides.dropout_rate = 0.0
        c.model_overrides.attention_dropout_rate = 0.0
    if arg == "tiny":
        c.train.num_train_steps = 300
    elif arg == "gpt1":
        c.data.vocab_size = 40478
        c.data.seq_len = 512
        c.train.batch_size = 64
        c.train.learning_rate = 2.5e-4
        c.train.warmup_steps = 2000
        c.train.num_train_steps = 100_000
    elif arg.startswith("gpt2"):
        c.data.vocab_size = 50257
        c.data.seq_len = 1024
        c.train.batch_size = 512
        c.train.learning_rate = 6e-4
        c.train.warmup_steps = 2000
        c.train.num_train_steps = 100_000
    if arg.startswith("gpt"):
        c.train.dtype = "bfloat16"
        c.train.eval_every_steps = 5000
        c.train.checkpoint_every_steps = 5000
        c.train.num_eval_steps = 100
    return c
