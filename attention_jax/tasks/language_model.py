"""Causal language modelling with GPT (Radford et al. 2018, section 3.1): maximise
Σ_i log P(u_i | u_<i) over packed documents.

    task = create("small", vocab_size, train_config, position="rope")
    loss, metrics = task.loss(params, batch, rng, train=True)
    tokens = generate(task, params, prompt_ids, max_new_tokens=50, eos_id=..., temperature=0.8)

A batch holds packed rows (`data.language_model.pack_documents`): "inputs", "targets" (the next
token of each input), "segment_ids" (0 = padding) and "positions" (restarting per document).

B batch, T length (of a prompt too), L generated length, V vocabulary size.
"""

import jax
import jax.numpy as jnp
import numpy as np

from attention_jax import checkpoint, decoding
from attention_jax.data import tokenizers
from attention_jax.models import gpt
from attention_jax.tasks.base import Task, with_compute_dtype
from attention_jax.tasks.losses import sequence_cross_entropy


class LanguageModeling(Task):
    """Next-token prediction over packed documents; every real token is a target once."""

    input_keys = ("inputs", "segment_ids", "positions")

    def loss(self, params, batch, rng, *, train):
        logits_BTV = self.apply(params, batch, rng, train=train)
        return sequence_cross_entropy(logits_BTV, batch["targets"], batch["segment_ids"] > 0)


def check_model_size(model_size: str) -> None:
    """A one-line ValueError unless `model_size` names a `GPTConfig` preset."""
    if model_size not in gpt.PRESETS:
        raise ValueError(f"unknown GPT model size {model_size!r}; expected one of {gpt.PRESETS}")


def create(model_size: str, vocab_size: int, train_config, overrides=()) -> LanguageModeling:
    """The task for a `GPTConfig` preset ("tiny", "small", "gpt1", "gpt2", …) computing in the
    training config's dtype; `overrides` set preset fields (None keeps one)."""
    check_model_size(model_size)
    overrides = {k: v for k, v in dict(overrides).items() if v is not None}
    model_config = getattr(gpt.GPTConfig, model_size)(vocab_size, **overrides)
    return LanguageModeling(gpt.GPT(with_compute_dtype(model_config, train_config)))


def load_run(run_dir, step: int | None = None):
    """(task, params, tokenizer) of a run `experiments/pretrain_gpt.py` wrote (its checkpoints
    and `spm.model`); a ValueError if the run holds another model."""
    restored = checkpoint.load(run_dir, step)
    if not isinstance(restored.model, gpt.GPT):
        raise ValueError(f"{run_dir} holds a {type(restored.model).__name__}, not a GPT")
    return LanguageModeling(restored.model), restored.params, tokenizers.load_tokenizer(run_dir)


def generate(
    task: LanguageModeling,
    params,
    prompt_BT,
    max_new_tokens: int,
    *,
    eos_id: int,
    method: str = "sample",
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    beam_size: int = 4,
    alpha: float = 0.6,
    seed: int = 0,
    use_cache: bool = True,
) -> np.ndarray:
    """Continues each prompt (one row of equal length each) by at most `max_new_tokens` tokens.

    Args:
      method: "greedy", "sample" (temperature, top-k, top-p) or "beam" (best of `beam_size`
        beams with GNMT's length penalty `alpha`).
      use_cache: False recomputes the whole prefix at every step (for comparison).

    Returns:
      tokens_BL: the new tokens, EOS kept and padding (0) after it.
    """
    prompt_BT = jnp.asarray(prompt_BT, jnp.int32)
    if prompt_BT.ndim != 2 or prompt_BT.shape[1] < 1:
        raise ValueError(f"prompts must be a (rows, length >= 1) array, got {prompt_BT.shape}")
    step_fn, state = task.model.start_decoding(
        params, prompt_BT, max_new_tokens, use_cache=use_cache
    )
    common = dict(bos_id=prompt_BT[:, -1], eos_id=eos_id, max_len=max_new_tokens)
    if method == "greedy":
        tokens_BL = decoding.greedy(step_fn, state, **common)
    elif method == "sample":
        rng = jax.random.PRNGKey(seed)
        tokens_BL = decoding.sample(
            step_fn, state, rng, temperature=temperature, top_k=top_k, top_p=top_p, **common
        )
    elif method == "beam":
        beams_BWL, _ = decoding.beam_search(
            step_fn, state, beam_size=beam_size, alpha=alpha, **common
        )
        tokens_BL = beams_BWL[:, 0]
    else:
        raise ValueError(f"method must be greedy, sample or beam, got {method!r}")
    return np.asarray(tokens_BL)
