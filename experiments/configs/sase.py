"""SST-2 sentiment with the structured self-attentive sentence embedding (Lin et al. 2017).

`get_config()` (or `:random`): random word embeddings over the training words; `:minilm`: the
input embeddings (384-d WordPiece) of the MiniLM package, trainable. Both train the `sst2` preset
(u = 150, d_a = 128, r = 4, MLP 512, dropout 0.5) with Adam (lr 1e-3, constant after 100 warmup
steps, gradients clipped at 1) on SST-2's phrases, validated on 872 whole sentences held out of
the train file (`glue.sentence_split`). The penalty coefficient is the paper's 1.0; 0 turns it
off. `--config.data.dataset=glue/sst2` or `yelp_polarity_reviews` reads TFDS instead.
"""

import ml_collections

from attention_jax import training


def get_config(arg: str = "random") -> ml_collections.ConfigDict:
    if arg not in ("random", "minilm"):
        raise ValueError(f"sase config is 'random' or 'minilm', got {arg!r}")
    c = ml_collections.ConfigDict()
    c.model_size = "sst2"  # A preset of SASEConfig: sst2, yelp, age or tiny.
    # "random", "minilm", a pretrained BERT folder, or a word2vec / GloVe text file.
    c.embeddings = arg
    c.penalty_coefficient = 1.0  # Weight of P = ‖AAᵀ − I‖²_F in the loss; 0 turns it off.
    # Fields of the model preset to override; None keeps the preset's value.
    c.model_overrides = ml_collections.ConfigDict()
    c.model_overrides.hops = ml_collections.config_dict.placeholder(int)  # r.
    c.model_overrides.hidden_size = ml_collections.config_dict.placeholder(int)  # u.
    c.model_overrides.attention_hidden_size = ml_collections.config_dict.placeholder(int)  # d_a.
    c.model_overrides.mlp_hidden_size = ml_collections.config_dict.placeholder(int)  # MLP units.
    c.model_overrides.dropout_rate = ml_collections.config_dict.placeholder(float)
    c.model_overrides.word_dropout_rate = ml_collections.config_dict.placeholder(float)
    c.model_overrides.hidden_dropout_rate = ml_collections.config_dict.placeholder(float)
    c.model_overrides.freeze_embeddings = ml_collections.config_dict.placeholder(bool)

    c.data = ml_collections.ConfigDict()
    c.data.dataset = (
        "sst2"  # "sst2" (the local TSV) or a TFDS name: glue/sst2, yelp_polarity_reviews.
    )
    c.data.train_file = "../shared/data/sst2/train.tsv"  # SST-2's GLUE train TSV.
    c.data.data_dir = ml_collections.config_dict.placeholder(str)  # TFDS data_dir; None: default.
    c.data.eval_split = "validation"  # TFDS split to validate on (SST-2's TSV is split instead).
    c.data.validation_size = 872  # Sentences held out of the SST-2 file (the official dev size).
    c.data.seed = 0  # Seeds the split, the row subset and the batch order.
    c.data.train_rows = 0  # Keep this many random training rows; 0 keeps all.
    c.data.min_count = 1  # Words seen fewer times in training become [UNK] (word vocabularies).
    c.data.max_len = 64  # Tokens kept per text.
    c.data.bucket = 8  # Batches are padded to a multiple of this many tokens.

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 128  # Validation sentences per batch.
    c.eval.num_plots = 4  # First validation sentences whose hops are drawn.

    c.train = training.default_config()
    c.train.workdir = ""  # Empty: runs/sase_<embeddings>_penalty<coefficient>.
    c.train.batch_size = 64
    c.train.num_train_steps = 3000  # About 3 epochs of SST-2's phrases.
    c.train.learning_rate = 1e-3
    c.train.schedule = "constant"
    c.train.warmup_steps = 100
    c.train.grad_clip_norm = 1.0
    c.train.eval_every_steps = 500
    c.train.checkpoint_every_steps = 1000
    c.train.log_every_steps = 100
    c.train.tokens_key = "tokens"
    return c
