"""Continues a prompt with a trained GPT: sampling (temperature, top-k, top-p), greedy or beam.

    python experiments/generate.py --config.run=runs/gpt_small --config.prompt="In the beginning"

The run directory is what `experiments/pretrain_gpt.py` wrote: checkpoints (`checkpoint.load`
rebuilds the model) and the SentencePiece model. From a notebook, the same is two calls:
`tasks.language_model.load_run` and `tasks.language_model.generate`.
"""

import numpy as np

from attention_jax import cli
from attention_jax.data import language_model as lm_data
from attention_jax.tasks import language_model

_CONFIG = cli.config_flag("experiments/configs/generate.py")


def main(config):
    step = None if config.step < 0 else config.step
    task, params, tokenizer = language_model.load_run(config.run, step)
    prompt = lm_data.frame(tokenizer.encode(config.prompt), tokenizer)[:-1]  # [CLS] and the text
    tokens_BL = language_model.generate(
        task,
        params,
        np.tile(prompt, (config.num_samples, 1)),
        config.max_new_tokens,
        eos_id=tokenizer.sep_id,
        method=config.method,
        temperature=config.temperature,
        top_k=config.top_k or None,
        top_p=config.top_p if config.top_p < 1.0 else None,
        beam_size=config.beam_size,
        alpha=config.alpha,
        seed=config.seed,
    )
    for i, row in enumerate(tokens_BL):
        new = [int(t) for t in row if t not in (0, tokenizer.sep_id)]
        print(f"[{i + 1}] {tokenizer.decode(prompt[1:] + new)}")


if __name__ == "__main__":
    cli.run(main, _CONFIG)
