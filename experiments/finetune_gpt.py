"""Fine-tunes a pre-trained GPT on SST-2 with the auxiliary LM loss (Radford et al. 2018, 3.2).

    python experiments/finetune_gpt.py --config=experiments/configs/gpt_finetune.py:sst2
    python experiments/finetune_gpt.py --config=experiments/configs/gpt_finetune.py:ablation

Loads the GPT and tokenizer of a pre-training run, turns the TSV rows into the paper's input
layout (`tasks.gpt_finetuning.prepare`), trains the classifier with L2 + λ · L1 on length-bucketed
batches with the shared loop — from the pre-trained weights, or from scratch — then predicts the
validation sentences. Each run writes its accuracy and times to <workdir>/results.json; the
ablation runs pre-trained/scratch × λ = lm_coef/0 in <workdir>/<start>_lm<λ> and prints a table.
"""

import json
import pathlib
import shutil
import time

import jax

from attention_jax import cli, training
from attention_jax.data import batching
from attention_jax.data import gpt_finetuning as gpt_data
from attention_jax.models import gpt
from attention_jax.tasks import gpt_finetuning, language_model

_CONFIG = cli.config_flag("experiments/configs/gpt_finetune.py:sst2")


def finetune(config) -> dict:
    """One fine-tuning run; returns what it writes to results.json."""
    start = time.perf_counter()
    lm, gpt_params, tokenizer = language_model.load_run(config.run)
    data = gpt_finetuning.prepare(config.data, tokenizer)
    train_config = training.resolve_durations(config.train, len(data.train["weight"]))
    task = gpt_finetuning.create(
        lm.model.config,
        data.num_labels,
        train_config,
        lm_coef=config.lm_coef,
        overrides=config.model_overrides,
    )
    workdir = pathlib.Path(train_config.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for path in tokenizer.files:  # the run directory is self-contained
        shutil.copy(path, workdir / pathlib.Path(path).name)

    batch_size = train_config.batch_size
    lengths = gpt_data.lengths(data.train)
    train_start = time.perf_counter()
    state = training.train(
        train_config,
        task,
        gpt_finetuning.train_batches(data.train, batch_size, config.data.seed),
        lambda: batching.eval_batches(data.eval_inputs, config.eval_batch_size),
        float(lengths.mean()) * gpt.flops_per_token(task.model.config, int(lengths.mean())),
        init_params=None if config.from_scratch else task.model.pretrained_params(gpt_params),
    )
    train_seconds = time.perf_counter() - train_start
    params = state.params
    if train_config.parallelism == "pmap":
        params = jax.tree.map(lambda x: x[0], params)
    metrics = data.score(task.predict(params, data.eval_inputs, config.eval_batch_size))
    eval_step = jax.jit(training.make_eval_step(task))
    means = training.evaluate(
        lambda batch: eval_step(params, batch),
        lambda: batching.eval_batches(data.eval_inputs, config.eval_batch_size),
    )
    metrics["lm_nll"] = means["lm_nll"]  # L1 per token on the validation inputs
    results = {
        "run": config.run,
        "from_scratch": config.from_scratch,
        "lm_coef": config.lm_coef,
        "metrics": metrics,
        "train_steps": train_config.num_train_steps,
        "batch_size": batch_size,
        "learning_rate": train_config.learning_rate,
        "train_rows": len(data.train["weight"]),
        "eval_rows": len(data.eval_inputs["weight"]),
        "data": data.info,
        "train_seconds": train_seconds,
        "wall_seconds": time.perf_counter() - start,
    }
    (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def variants(config):
    """The runs `config` asks for: itself, or the 2×2 ablation under its workdir."""
    if not config.ablation:
        return [config]
    runs = []
    for from_scratch in (False, True):
        for lm_coef in (config.lm_coef, 0.0):
            run = config.copy_and_resolve_references()
            start = "scratch" if from_scratch else "pretrained"
            run.from_scratch, run.lm_coef = from_scratch, lm_coef
            run.train.workdir = f"{config.train.workdir}/{start}_lm{lm_coef:g}"
            runs.append(run)
    return runs


def main(config):
    rows = [finetune(run) for run in variants(config)]
    first = rows[0]
    print(
        f"\nGPT-1 fine-tuning on {config.data.train_file} from {config.run}: "
        f"{first['train_steps']} steps of {first['batch_size']}, {first['train_rows']} training "
        f"rows; {first['data']['validation']}\n"
        "| start | λ | accuracy | LM loss L1 | training time | wall time |\n"
        "|---|---|---|---|---|---|"
    )
    for r in rows:
        start = "random init" if r["from_scratch"] else "pre-trained"
        print(
            f"| {start} | {r['lm_coef']:g} | {r['metrics']['accuracy']:.3f} | "
            f"{r['metrics']['lm_nll']:.2f} | "
            f"{r['train_seconds']:.0f} s | {r['wall_seconds']:.0f} s |"
        )
    print(f"Results: {config.train.workdir}{'/*' if config.ablation else ''}/results.json")


if __name__ == "__main__":
    cli.run(main, _CONFIG)
