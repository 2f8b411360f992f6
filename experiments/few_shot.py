"""Zero-, one- and few-shot evaluation of a pre-trained GPT (Brown et al. 2020): accuracy vs k.

    python experiments/few_shot.py --config=experiments/configs/few_shot.py

Builds the tasks (`data.few_shot`; saved as JSON lines under <output_dir>/tasks), scores each
with every k of `ks` (`evaluation.few_shot.evaluate`), prints a table, and writes
<output_dir>/results.json and <output_dir>/accuracy_vs_k.png (multiple choice: per-token
normalised accuracy, GPT-3's default; free-form: exact match).
"""

import json
import pathlib

from attention_jax import cli
from attention_jax.data import bert_pretraining, corpus
from attention_jax.data import few_shot as tasks
from attention_jax.evaluation import few_shot
from attention_jax.interpret import plots
from attention_jax.tasks import language_model

_CONFIG = cli.config_flag("experiments/configs/few_shot.py")


def build_tasks(config) -> list[few_shot.Task]:
    d, n = config.data, config.num_examples
    unknown = set(config.tasks) - {"next_verse", "last_word", "sst2"}
    if unknown:
        raise ValueError(f"unknown tasks {sorted(unknown)}; built in: next_verse, last_word, sst2")
    built = []
    if {"next_verse", "last_word"} & set(config.tasks):
        documents = corpus.read_documents(corpus.list_corpus_files(d.corpus_dir))
        _, chapters = bert_pretraining.split_documents(documents, d.eval_fraction, d.seed)
        if "next_verse" in config.tasks:
            built.append(
                tasks.next_verse(chapters, n, config.num_choices, config.seed, d.max_words)
            )
        if "last_word" in config.tasks:
            built.append(tasks.last_word(chapters, n, config.seed, d.max_words))
    if "sst2" in config.tasks:
        sizes = dict(validation_size=d.sst2_validation_size, seed=config.seed)
        built.append(tasks.sst2(d.sst2_file, n, d.sst2_pool_size, max_words=d.max_words, **sizes))
    return built + [few_shot.load_task(path) for path in config.task_files]


def headline(task: few_shot.Task) -> str:
    return "acc_per_token" if task.multiple_choice else "exact_match"


def main(config):
    lm, params, tokenizer = language_model.load_run(config.run)
    out = pathlib.Path(config.output_dir)
    results, series = {}, {}
    for task in build_tasks(config):
        tasks.save(task, out / "tasks" / f"{task.name}.jsonl")
        results[task.name] = [
            few_shot.evaluate(
                task,
                lm.model,
                params,
                tokenizer,
                k=k,
                seed=config.seed,
                batch_size=config.batch_size,
                max_new_tokens=config.max_new_tokens,
                context=config.context,
            )
            for k in config.ks
        ]
        rows = results[task.name]
        series[f"{task.name} ({headline(task)})"] = (
            [r["k"] for r in rows],
            [r[headline(task)] for r in rows],
        )
    (out / "results.json").write_text(json.dumps(results, indent=2))
    plots.plot_lines(
        series,
        out / "accuracy_vs_k.png",
        xlabel="k, shots asked for (the table says how many fit the context)",
        ylabel="accuracy",
        title=f"In-context learning of {config.run}",
    )

    print(f"\n{config.run}, {config.num_examples} examples per task:")
    metrics = ("acc", "acc_per_token", "acc_unconditional", "exact_match")
    print(f"{'task':<11} {'k':>3} {'shots':>6} " + " ".join(f"{m:>17}" for m in metrics))
    for name, rows in results.items():
        for r in rows:
            cells = " ".join(f"{r[m]:>17.3f}" if m in r else " " * 17 for m in metrics)
            print(f"{name:<11} {r['k']:>3} {r['shots']:>6.1f} {cells}")
    print(f"Plot: {out / 'accuracy_vs_k.png'}   Numbers: {out / 'results.json'}")


if __name__ == "__main__":
    cli.run(main, _CONFIG)
