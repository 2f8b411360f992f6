"""Interpretability: what attention explains, measured.

rollout      attention rollout and flow (Abnar & Zuidema 2020) from `Task.attention_weights`
attribution  gradient × input and integrated gradients (Sundararajan et al. 2017) over the
             input embeddings of any task's model
agreement    Kendall τ and top-k overlap of two importance rankings (Jain & Wallace 2019)
heads        head importance by head masking and pruning (Michel et al. 2019)
bottleneck   BLEU by source length (Bahdanau et al. 2015, fig. 2) and the last target word's
             loss for gradient norms by source position
permutation  the attention-permutation test (Jain & Wallace 2019, section 4.2.1)
plots        line, scatter and histogram PNGs
"""

from attention_jax.interpret import (
    agreement,
    attribution,
    bottleneck,
    heads,
    permutation,
    plots,
    rollout,
)

__all__ = ["agreement", "attribution", "bottleneck", "heads", "permutation", "plots", "rollout"]
