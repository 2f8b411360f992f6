"""What attention explains, measured on the runs `make finetune-bert` and `make translate` write.

    python experiments/interpret.py --config=experiments/configs/interpret.py:bert
    python experiments/interpret.py --config=experiments/configs/interpret.py:translation

bert (SST-2 classifier): [CLS]'s attention rollout (and last-layer attention) against integrated
gradients on validation sentences, Kendall τ (`tau.png`) and top-k overlap, as highlighted text
(`sentences.html`); Jain & Wallace's permutation test, the median change of the output when the
last layer's [CLS] attention is permuted among the real tokens, against its largest weight
(`permutation.png`); head importance by head masking (Michel et al. 2019) and the accuracy as
heads are pruned, least important first (`pruning.png`). translation: BLEU by source length
(`bleu_by_length.png`, Bahdanau et al. 2015 fig. 2) and the gradient norm of the last target
word's loss by source position (`gradient_by_position.png`). Numbers: <output_dir>/results.json.
"""

import json
import pathlib

import jax
import numpy as np

from attention_jax import checkpoint, cli, viz
from attention_jax.data import batching, tokenizers, translation
from attention_jax.interpret import agreement, bottleneck, classifier, heads, permutation, plots
from attention_jax.tasks import bert_finetuning
from attention_jax.tasks import translation as translation_task

_CONFIG = cli.config_flag("experiments/configs/interpret.py:bert")


def bert(config, out: pathlib.Path) -> dict:
    restored, tokenizer = checkpoint.load(config.run), tokenizers.load_tokenizer(config.run)
    task = bert_finetuning.Classification(restored.model)
    data = bert_finetuning.PREPARE["classification"](config.data, tokenizer)
    n = min(config.num_sentences, len(data.eval_inputs["weight"]))
    rows = classifier.trim({k: v[:n] for k, v in data.eval_inputs.items()})
    explain, parts = classifier.explainer(task, steps=config.ig_steps), []
    for batch in batching.eval_batches(rows, config.batch_size):
        special = (tokenizer.cls_id, tokenizer.sep_id)
        mask_BT = classifier.word_mask(batch["input_ids"], batch["input_mask"], special)
        parts.append((explain(restored.params, batch, mask_BT), mask_BT))
    e, mask_ZT = jax.tree.map(lambda *a: np.concatenate(a)[:n], *parts)
    magnitude_ZT = np.abs(e.attribution_BT)
    tau = {
        name: np.asarray(agreement.kendall_tau(weights_ZT, magnitude_ZT, mask_ZT))
        for name, weights_ZT in (("rollout", e.rollout_BT), ("last_layer", e.attention_BT))
    }
    overlap = agreement.top_k_overlap(e.rollout_BT, magnitude_ZT, config.top_k, mask_ZT)
    kept = np.isfinite(tau["rollout"])
    plots.plot_histogram(
        tau["rollout"][kept],
        out / "tau.png",
        xlabel="Kendall τ: [CLS] attention rollout vs |integrated gradients|",
        title=f"SST-2 validation, {kept.sum()} sentences",
    )
    html = classifier.html_rows(e, rows, mask_ZT, tokenizer, config.num_html)
    viz.highlight_html(html, out / "sentences.html", title="Attention rollout vs attributions")

    perm_ZPS = permutation.random_permutations(
        np.random.default_rng(0), rows["input_mask"], config.num_permutations
    )
    tvd_ZP, attention_ZT = permutation.permutation_test(
        task, restored.params, rows, perm_ZPS, batch_size=config.batch_size
    )
    plots.plot_scatter(
        attention_ZT.max(1),
        np.median(tvd_ZP, 1),
        out / "permutation.png",
        xlabel="max attention ([CLS], last layer, mean of heads)",
        ylabel="median TVD(output, permuted output)",
        title=f"SST-2 validation, {n} sentences × {config.num_permutations} permutations",
        logy=True,
    )

    c = restored.model.config
    picked = np.random.default_rng(0).permutation(len(data.train["weight"]))
    train = classifier.trim({k: v[picked[: config.importance_rows]] for k, v in data.train.items()})
    counts = list(range(0, c.num_layers * c.num_heads + 1, config.prune_step))
    importance_YN, accuracy = heads.pruning_curve(
        task,
        restored.params,
        train,
        classifier.trim(data.eval_inputs),
        lambda outputs: data.score(outputs)["accuracy"],
        counts,
        batch_size=config.batch_size,
    )
    plots.plot_lines(
        {"pruned least important first": (counts, accuracy)},
        out / "pruning.png",
        xlabel=f"heads pruned (of {c.num_layers * c.num_heads})",
        ylabel="validation accuracy",
        hline=accuracy[0] - 0.01,
    )
    finite = {name: t[np.isfinite(t)] for name, t in tau.items()}
    gap = np.abs(e.gap_B)
    return {
        "sentences": int(n),
        "tau_median": {name: float(np.median(t)) for name, t in finite.items()},
        "tau_quartiles": {name: np.percentile(t, [25, 75]).tolist() for name, t in finite.items()},
        f"top_{config.top_k}_overlap_mean": float(np.mean(overlap)),
        "ig_completeness_gap": {"median": float(np.median(gap)), "max": float(np.max(gap))},
        "permutation": permutation.summary(tvd_ZP, attention_ZT),
        "head_importance": importance_YN.round(4).tolist(),
        "pruning_curve": dict(zip(counts, accuracy, strict=True)),
        "heads_pruned_within_1_point": heads.prunable(counts, accuracy, drop=0.01),
    }


def translate(config, out: pathlib.Path) -> dict:
    d, runs = config.data, {label: pathlib.Path(r) for label, r in config.runs.items() if r}
    checkpoints = {k: (checkpoint.load(r), tokenizers.load_tokenizer(r)) for k, r in runs.items()}
    pairs = translation.load_dataset_pairs(
        d.dataset,
        config.split,
        manual_dir=d.manual_dir,
        source_lang=d.source_lang,
        target_lang=d.target_lang,
        data_dir=f"{d.output_dir}/tfds",
    )
    lengths = [len(source.split()) for source, _ in pairs]
    results, bleu_series, gradient_series = {}, {}, {}
    for label, (restored, tokenizer) in checkpoints.items():
        hypotheses = (runs[label] / f"{config.split}.hyp.txt").read_text().splitlines()
        buckets = bottleneck.bleu_by_length(
            hypotheses, [t for _, t in pairs], lengths, config.length_edges, lowercase=d.lowercase
        )
        batches = translation.pair_batches(tokenizer, pairs, config.batch_size, 0, shuffle=False)
        task = translation_task.Translation(restored.model)
        norms = bottleneck.source_gradient_norms(task, restored.params, batches)
        mean_S, count_S = bottleneck.mean_by_position(norms, config.max_position)
        names = [f"{lo}-{hi - 1}" for lo, hi, _, _ in buckets]
        bleu_series[label] = (names, [b.score if b else np.nan for *_, b in buckets])
        gradient_series[label] = (np.arange(config.max_position), mean_S)
        results[label] = {
            "steps": int(restored.step),
            "bleu": json.loads((runs[label] / "results.json").read_text())["bleu"],
            "bleu_by_source_words": {
                name: {"sentences": k, "bleu": b and b.score}
                for name, (*_, k, b) in zip(names, buckets, strict=True)
            },
            "relative_gradient_by_position": mean_S.round(4).tolist(),
            "sentences_by_position": count_S.astype(int).tolist(),
        }
    plots.plot_lines(bleu_series, out / "bleu_by_length.png", xlabel="source words", ylabel="BLEU")
    plots.plot_lines(
        gradient_series,
        out / "gradient_by_position.png",
        xlabel="source position (pieces)",
        ylabel="‖∂ loss(last target word) / ∂ source embedding‖ / max",
        logy=True,
    )
    return results


def main(config):
    out = pathlib.Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = (bert if config.part == "bert" else translate)(config, out)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"Figures and results: {out}")


if __name__ == "__main__":
    cli.run(main, _CONFIG)
