"""Fine-tunes a dense passage retriever (Karpukhin et al. 2020) and compares it with BM25.

    python experiments/train_dpr.py                      # MiniLM, pydocs held-out documents
    python experiments/train_dpr.py --config.init_from=runs/bert_tiny
    python experiments/train_dpr.py --config.data.format=dpr \
        --config.data.train_file=train.json --config.data.eval_file=dev.json

Loads a pre-trained BERT (the MiniLM package, a Hugging Face folder or one of our runs) into
both encoders, reads and splits the data (`tasks.retrieval.prepare`), scores BM25 (bm25s) and
the encoder before fine-tuning on the evaluation questions, trains with in-batch and hard
negatives in the shared loop, then scores the fine-tuned encoder and the BM25 + dense hybrid:
top-1/5/20/100 accuracy and MRR@10 over the whole collection. The table and the training time
are printed and written to <workdir>/results.json. Runs on one host.
"""

import json
import pathlib
import shutil
import time

import jax

from attention_jax import cli, training
from attention_jax.data import batching
from attention_jax.evaluation import retrieval as search
from attention_jax.interop import pretrained
from attention_jax.tasks import retrieval

_CONFIG = cli.config_flag("experiments/configs/dpr.py")


def main(config):
    start = time.perf_counter()
    encoder = pretrained.load_pretrained_bert(config.init_from)
    data = retrieval.prepare(config.data, encoder.tokenizer)
    rows = len(data.train["question_input_ids"])
    train_config = training.resolve_durations(config.train, rows)
    task = retrieval.create(encoder.config, train_config, config.model_overrides, config.scale)
    workdir = pathlib.Path(train_config.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for path in encoder.tokenizer.files:  # so that retrieve.py can load this run
        shutil.copy(path, workdir / pathlib.Path(path).name)

    def evaluate(params, bm25_BZ=None):
        return retrieval.evaluate(
            task, params, data, encoder.tokenizer, config.data, config.eval_batch_size, bm25_BZ
        )

    bm25_BZ = retrieval.bm25_scores(data)
    table = {"BM25 (bm25s)": search.metrics(search.rank(bm25_BZ, max(search.KS)), data.relevant)}
    init_params = retrieval.init_params(task, encoder.encoder)
    if config.evaluate_before:
        table["dense, before fine-tuning"] = evaluate(init_params)["dense"]

    batch_size = train_config.batch_size
    train_data = batching.pretraining_batches(
        batching.ArraySource(data.train), batch_size, config.data.seed
    )
    train_start = time.perf_counter()
    state = training.train(train_config, task, train_data, init_params=init_params)
    train_seconds = time.perf_counter() - train_start
    params = state.params
    if train_config.parallelism == "pmap":
        params = jax.tree.map(lambda x: x[0], params)
    after = evaluate(params, bm25_BZ)
    table["dense, fine-tuned"] = after["dense"]
    if "hybrid" in after:
        table[f"hybrid: n(BM25) + {config.data.hybrid_weight:g}·n(dense)"] = after["hybrid"]

    results = {
        "init_from": config.init_from,
        "metrics": table,
        "train_steps": train_config.num_train_steps,
        "batch_size": batch_size,
        "train_rows": rows,
        "data": data.info,
        "train_seconds": train_seconds,
        "wall_seconds": time.perf_counter() - start,
    }
    (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"\nDense passage retrieval from {config.init_from}: {results['train_steps']} steps of "
        f"{batch_size}, {rows} training questions; {data.info['eval_questions']} questions "
        f"({data.info['evaluated_on']}) against {data.info['passages']} passages\n"
        f"{search.markdown_table(table)}\n"
        f"training {train_seconds:.0f} s, wall time {results['wall_seconds']:.0f} s\n"
        f"Results: {workdir / 'results.json'}"
    )


if __name__ == "__main__":
    cli.run(main, _CONFIG)
