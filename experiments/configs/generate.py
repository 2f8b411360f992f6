"""Text generation from a GPT run (`experiments/generate.py`, `make generate`)."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.run = "runs/gpt_small"  # A pretrain_gpt.py workdir: its checkpoints and spm.model.
    c.step = -1  # The checkpoint step to load; -1 loads the newest.
    c.prompt = "In the beginning"  # The text to continue.
    c.max_new_tokens = 60  # Tokens generated after the prompt (fewer if [SEP] ends the text).
    c.num_samples = 3  # Continuations of the prompt, generated as one batch.
    c.method = "sample"  # "greedy", "sample" or "beam" (the best beam of each row).
    c.temperature = 0.8  # Sampling: softmax(logits / temperature); 0 is greedy.
    c.top_k = 40  # Sampling: keep only the k most likely tokens; 0 keeps all.
    c.top_p = 1.0  # Sampling: keep the smallest set of tokens with this much mass (nucleus).
    c.beam_size = 4  # Beam search: beams per row.
    c.alpha = 0.6  # Beam search: GNMT length-penalty exponent.
    c.seed = 0  # Sampling seed.
    return c
