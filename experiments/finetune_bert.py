"""Fine-tunes BERT on classification, SQuAD v1.1 or named entities (Devlin et al. 2019, sec. 4).

    python experiments/finetune_bert.py --config=experiments/configs/bert_finetune.py:classification
    python experiments/finetune_bert.py --config=experiments/configs/bert_finetune.py:squad \
        --config.data.train_file=train-v1.1.json --config.data.eval_file=dev-v1.1.json

Loads a pre-trained encoder (a Hugging Face BERT folder, the MiniLM package, or one of our runs
with its tokenizer), turns the task's files into features (`tasks.bert_finetuning.PREPARE`),
trains the task model with the shared loop starting from those encoder weights (the head starts
fresh), then predicts the evaluation set and scores it: accuracy and F1 (classification), exact
match and F1 with the official normalisation (SQuAD), entity-level F1 (NER). The metrics and the
wall time are printed and written to <workdir>/results.json. Runs on one host.
"""

import json
import pathlib
import shutil
import time

import jax
import numpy as np

from attention_jax import cli, training
from attention_jax.interop import pretrained
from attention_jax.models import bert
from attention_jax.tasks import bert_finetuning

_CONFIG = cli.config_flag("experiments/configs/bert_finetune.py:classification")


def main(config):
    start = time.perf_counter()
    if config.task not in bert_finetuning.TASKS:
        raise ValueError(f"task {config.task!r} is not one of {tuple(bert_finetuning.TASKS)}")
    if config.data.bucket < 0:
        raise ValueError(
            f"data.bucket must be 0 (fixed padding) or positive, got {config.data.bucket}"
        )
    encoder = pretrained.load_pretrained_bert(config.init_from)
    data = bert_finetuning.PREPARE[config.task](config.data, encoder.tokenizer)
    train_config = training.resolve_durations(config.train, len(data.train["weight"]))
    task = bert_finetuning.create(
        config.task, encoder.config, data.num_labels, train_config, config.model_overrides
    )
    workdir = pathlib.Path(train_config.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for path in encoder.tokenizer.files:  # so that this run can be init_from too
        shutil.copy(path, workdir / pathlib.Path(path).name)

    batch_size, bucket = train_config.batch_size, config.data.bucket
    train_data = task.train_batches(data.train, batch_size, config.data.seed, bucket=bucket)
    # The encoder's FLOPs on the real tokens (padding is not model work); the heads add little.
    mean_length = float(data.train["input_mask"].sum(1).mean())
    flops = bert.flops_per_example(task.model.config, mean_length, 0)
    train_start = time.perf_counter()
    state = training.train(
        train_config,
        task,
        train_data,
        lambda: task.eval_batches(data.eval_inputs, batch_size, bucket=bucket),
        flops,
        init_params={"bert": encoder.encoder},
    )
    train_seconds = time.perf_counter() - train_start
    params = state.params
    if train_config.parallelism == "pmap":
        params = jax.tree.map(lambda x: x[0], params)
    metrics = data.score(task.predict(params, data.eval_inputs, batch_size, bucket=bucket))
    results = {
        "task": config.task,
        "init_from": config.init_from,
        "metrics": metrics,
        "train_steps": train_config.num_train_steps,
        "batch_size": batch_size,
        "max_seq_length": config.data.max_seq_length,
        "bucket": bucket,
        "train_features": len(data.train["weight"]),
        "eval_features": len(data.eval_inputs["weight"]),
        "data": data.info,
        "train_seconds": train_seconds,
        "seconds_per_step": train_seconds / train_config.num_train_steps,
        "wall_seconds": time.perf_counter() - start,
    }
    (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    scores = "  ".join(
        f"{name} {value:.4g}" for name, value in metrics.items() if np.isscalar(value)
    )
    print(
        f"\nBERT fine-tuning, task {config.task}, from {config.init_from}: "
        f"{results['train_steps']} steps of {batch_size}, "
        f"{results['train_features']} training / {results['eval_features']} evaluation inputs\n"
        f"  {scores}\n"
        f"  training {train_seconds:.0f} s, wall time {results['wall_seconds']:.0f} s\n"
        f"Results: {workdir / 'results.json'}"
    )


if __name__ == "__main__":
    cli.run(main, _CONFIG)
