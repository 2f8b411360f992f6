"""In-context evaluation of a pre-trained GPT (`make few-shot`; Brown et al. 2020).

`get_config()` evaluates the run `make pretrain-gpt` writes on three tasks built from the shipped
data (`data.few_shot`): next verse (4 candidates) and last word (free-form) on the chapters that
pre-training held out (the same corpus, fraction and seed), and SST-2 sentiment on the
sentence-level validation split, each with k = 0, 1, 4 and 16 shots (fewer where the context is
full). `task_files` adds JSON-lines or lm-evaluation-harness YAML tasks (`evaluation.few_shot`).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.run = "runs/gpt_small"  # A run of experiments/pretrain_gpt.py: checkpoints and spm.model.
    c.tasks = ("next_verse", "last_word", "sst2")  # Built-in tasks (data.few_shot).
    c.task_files = ()  # More tasks: .jsonl or lm-evaluation-harness .yaml files.
    c.ks = (0, 1, 4, 16)  # Shots per prompt.
    c.num_examples = 250  # Examples per built-in task.
    c.num_choices = 4  # Candidates of next_verse.
    c.seed = 0  # Seeds the examples and the shots.
    c.context = 128  # Prompt + answer tokens at most: the rows make pretrain-gpt trains on.
    c.batch_size = 16  # Prompts per jitted pass (with all their candidates).
    c.max_new_tokens = 8  # Greedy tokens for free-form tasks.
    c.output_dir = "runs/few_shot"  # results.json, accuracy_vs_k.png, the task files.

    c.data = ml_collections.ConfigDict()
    c.data.corpus_dir = "corpora/web_bible"  # The pre-training corpus ...
    c.data.eval_fraction = 0.05  # ... and its held-out split (experiments/configs/gpt_pretrain.py).
    c.data.seed = 12345
    c.data.max_words = 20  # Verses and sentences of at most 20 words, so shots fit the context.
    c.data.sst2_file = "../shared/data/sst2/train.tsv"  # GLUE SST-2 train.tsv.
    c.data.sst2_validation_size = 872  # Sentences held out, as make finetune-bert holds them out.
    c.data.sst2_pool_size = 1000  # Training rows shots are drawn from.
    return c
