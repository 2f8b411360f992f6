"""BERT pre-training (Devlin et al. 2019, section 3.1 and appendix A.2).

`get_config("tiny")` trains BERT-Tiny on the World English Bible shipped in corpora/ on a CPU in
a few minutes (`make pretrain-bert`) with optax's AdamW (bias-corrected Adam), lr 1e-3 and 100
warmup steps then linear decay to 0 over the remaining steps, weight decay 0.01 on everything but
biases and LayerNorm parameters. mini, small and medium share these settings.
`get_config("base")` and `get_config("large")` are google-research/bert's recipe for a TPU VM
slice: batch 256, 1M steps, its AdamWeightDecayOptimizer (Adam without bias correction,
β2 = 0.999, ε = 1e-6, weight decay 0.01 on everything but biases and LayerNorm parameters),
lr 1e-4 with 10k warmup steps and linear decay from step 0 (η · (1 − s/S)), gradients clipped
to norm 1, dropout 0.1, bfloat16 compute, dupe_factor 10, and sequences of 128 tokens for 90%
of the steps, then 512 for the rest.
"""

import ml_collections

from attention_jax import training
from attention_jax.tasks import bert_pretraining


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
    bert_pretraining.check_model_size(arg)
    c = ml_collections.ConfigDict()
    c.model_size = arg  # A BertConfig preset: tiny, mini, small, medium, base or large.
    c.model_overrides = ml_collections.ConfigDict()  # BertConfig fields to override (dropout...).

    c.data = ml_collections.ConfigDict()
    c.data.corpus_dir = "corpora/web_bible"  # Folder of .txt/.txt.gz: a sentence per line,
    # a blank line between documents (google-research/bert's input format).
    c.data.output_dir = "runs/data"  # Prepared TFDS datasets and the SentencePiece model.
    c.data.vocab_size = 8000  # SentencePiece vocabulary (WordPiece-sized 30522 for base/large).
    c.data.dupe_factor = 5  # Times each document is re-masked (static masking, as the paper).
    c.data.short_seq_prob = 0.1  # Fraction of examples with a shorter random target length.
    c.data.masked_lm_prob = 0.15  # Fraction of tokens predicted: 80% [MASK] 10% random 10% same.
    c.data.whole_word_masking = False  # Mask every piece of a chosen word together.
    c.data.eval_fraction = 0.05  # Documents held out for the masked-LM evaluation.
    c.data.seed = 12345  # Seeds tokenizer sampling, the eval split and example creation.
    # Sequence-length phases: (max_seq_length, max_predictions_per_seq, fraction of the steps).
    c.data.phases = ((128, 20, 1.0),)

    c.train = training.default_config()
    c.train.workdir = f"runs/bert_{arg}"
    c.train.num_train_steps = 1000
    c.train.batch_size = 32
    c.train.optimizer = "adamw"  # optax's AdamW, bias-corrected (see the docstring).
    c.train.schedule = "linear"  # Warmup, then linear decay from the end of warmup.
    c.train.learning_rate = 1e-3
    c.train.warmup_steps = 100
    c.train.weight_decay = 0.01
    c.train.grad_clip_norm = 1.0
    c.train.eval_every_steps = 500
    c.train.num_eval_steps = 20
    c.train.log_every_steps = 100
    c.train.checkpoint_every_steps = 500
    c.train.best_metric = "mlm_loss"
    c.train.tokens_key = "input_mask"

    if arg in ("base", "large"):
        c.data.vocab_size = 30522
        c.data.dupe_factor = 10  # google-research/bert's create_pretraining_data.py default.
        c.data.phases = ((128, 20, 0.9), (512, 80, 0.1))
        c.train.num_train_steps = 1_000_000
        c.train.batch_size = 256
        c.train.optimizer = "bert_adamw"  # google-research/bert's AdamWeightDecayOptimizer.
        c.train.schedule = "bert_linear"  # Warmup, then η · (1 − s/S): decay from step 0.
        c.train.learning_rate = 1e-4
        c.train.warmup_steps = 10_000
        c.train.grad_clip_norm = 1.0
        c.train.dtype = "bfloat16"
        c.train.eval_every_steps = 10_000
        c.train.num_eval_steps = 100
        c.train.log_every_steps = 100
        c.train.checkpoint_every_steps = 10_000
        c.train.multihost = True
        c.train.mesh.data = -1
    return c
