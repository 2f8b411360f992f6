"""GPT-1 fine-tuning on SST-2 (Radford et al. 2018, sections 3.2, 3.3 and 4.1).

`get_config("sst2")` fine-tunes the GPT of `make pretrain-gpt` (runs/gpt_small) once;
`get_config("ablation")` (`make finetune-gpt`) runs the paper's two ablations as a 2×2 —
pre-trained or randomly initialised (same architecture and tokenizer) × λ = lm_coef or 0 — and
prints one table. Validation is SST-2's leak-free sentence split with BERT fine-tuning's size
and seed (experiments/configs/bert_finetune.py), so the accuracies compare.

The paper's recipe: Adam, batch 32, dropout 0.1 (residual, attention and classifier), L2
weight 0.01, linear warmup over 0.2% of training then linear decay, λ = 0.5, lr 6.25e-5 for 3
epochs of a 117M model. Here a 4 × 256 model trains for 400 steps on a CPU (a fifth of an
epoch), so the learning rate is higher, 2e-4, the same for all four runs as in the paper's
ablations. `--config.data.tuning=true` scores sentences held out of the training part instead,
to compare recipes without looking at the validation sentences: there 2e-4 and 6e-4 scored
0.741 and 0.744 (pre-trained, λ = 0.5).
"""

import ml_collections
from ml_collections import config_dict

from attention_jax import training

VARIANTS = ("sst2", "ablation")


def get_config(arg: str = "sst2") -> ml_collections.ConfigDict:
    if arg not in VARIANTS:
        raise ValueError(f"unknown GPT fine-tuning config {arg!r}; expected one of {VARIANTS}")
    c = ml_collections.ConfigDict()
    c.run = "runs/gpt_small"  # The pre-training run (experiments/pretrain_gpt.py): model, spm.
    c.from_scratch = False  # Random initialisation of the same architecture and tokenizer.
    c.lm_coef = 0.5  # λ of L3 = L2 + λ · L1 (eq. 5); 0 switches the auxiliary LM loss off.
    c.ablation = arg == "ablation"  # Run pre-trained/scratch × λ = lm_coef/0 under workdir.
    c.model_overrides = ml_collections.ConfigDict()  # GPTClassifierConfig fields to override.
    c.model_overrides.dropout_rate = 0.1  # Residual, embedding and classifier dropout (4.1).
    c.model_overrides.attention_dropout_rate = 0.1  # On the attention probabilities.

    c.data = ml_collections.ConfigDict()
    c.data.train_file = "../shared/data/sst2/train.tsv"  # GLUE TSV with a header row.
    c.data.eval_file = config_dict.placeholder(str)  # None: hold sentences out of train_file.
    c.data.text_columns = ("sentence",)  # One column, or two for sentence pairs.
    c.data.label_column = "label"  # Header of the label column.
    c.data.labels = ("0", "1")  # Label strings in class-id order.
    c.data.similarity = False  # Pairs: both orders, states added (else premise $ hypothesis).
    c.data.validation_size = 872  # Whole sentences held out (SST-2 dev size; as BERT's).
    c.data.seed = 0  # The split (BERT fine-tuning's seed) and the batch order.
    c.data.tuning = False  # Score on sentences held out of the rest of train (for tuning).
    c.data.max_len = 128  # Tokens per row, special tokens included (SST-2: at most 104).
    c.eval_batch_size = 64  # Rows per prediction batch.

    c.train = training.default_config()
    c.train.workdir = f"runs/gpt_finetune{'' if arg == 'sst2' else '_ablation'}"
    c.train.num_train_steps = 400
    c.train.batch_size = 32
    c.train.optimizer = "adamw"
    c.train.learning_rate = 2e-4
    c.train.schedule = "linear"  # Warmup, then linear decay to 0.
    c.train.warmup_steps = config_dict.placeholder(int)  # None: from warmup_proportion.
    c.train.warmup_proportion = 0.002  # The paper's 0.2%.
    c.train.weight_decay = 0.01  # The paper's L2 regularisation w = 0.01 (section 4.1).
    c.train.grad_clip_norm = 1.0
    c.train.eval_every_steps = 0  # Scored once at the end, by the script.
    c.train.log_every_steps = 100
    c.train.checkpoint_every_steps = 400
    c.train.keep_checkpoints = 1
    c.train.tokens_key = "segment_ids"
    return c
