"""Gradient-based token attributions over the input embeddings: gradient × input and integrated
gradients (Sundararajan, Taly & Yan 2017, "Axiomatic Attribution for Deep Networks").

A model's input embeddings are the output of one of its modules (the word-embedding table), so
`module_output` reads them while the model runs and `with_module_output` runs the model with
them replaced (Flax's method interception): any score of the model becomes a function
F(x_BTD) of the embeddings that JAX differentiates, and no model has to expose them.

    x_BTD, score_fn = embedding_function(task, params, batch, output_fn)
    attribution_BT = integrated_gradients(score_fn, x_BTD, baseline_BTD)

Integrated gradients attribute to input i

    IG_i(x) = (x_i − x'_i) · ∫₀¹ ∂F(x' + α (x − x')) / ∂x_i dα

and are complete (proposition 1): Σ_i IG_i(x) = F(x) − F(x'). Sundararajan et al. approximate the
integral by a Riemann sum; this module uses Gauss–Legendre quadrature, which reaches the
same completeness gap with far fewer gradient evaluations on smooth networks. Token t's
attribution is the sum over its D embedding coordinates. Gradient × input is ∂F/∂x_t · x_t.

`score_fn(x_BTD) -> score_B` must treat rows independently (a model without dropout): gradients
of the summed score are then each row's own.

B batch, T input positions, D embedding size.
"""

import contextlib
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from attention_jax.models import bert, gpt, seq2seq_rnn, transformer


@contextlib.contextmanager
def _intercepted(path: str, call: int, replace):
    """Within the context, the `call`-th call (from 0) of the module at `path` returns
    `replace(output)`; other calls and modules run as they are."""
    count = itertools.count()

    def interceptor(next_fun, args, kwargs, context):
        output = next_fun(*args, **kwargs)
        if context.method_name != "__call__" or "/".join(context.module.path) != path:
            return output
        return replace(output) if next(count) == call else output

    with nn.intercept_methods(interceptor):
        yield


def module_output(fn, path: str, *, call: int = 0):
    """What the `call`-th call of the Linen module at `path` ("bert/embeddings/
    word_embeddings") returns while `fn()` runs."""
    outputs = []
    with _intercepted(path, call, lambda output: outputs.append(output) or output):
        fn()
    if not outputs:
        raise ValueError(f"no call {call} of a module at {path!r}")
    return outputs[0]


def with_module_output(fn, path: str, value, *, call: int = 0):
    """`fn()` with the `call`-th call of the module at `path` returning `value` instead."""
    with _intercepted(path, call, lambda output: value.astype(output.dtype)):
        return fn()


def input_embedding_path(model) -> str:
    """The path of the module whose first call embeds the input tokens (the source, for the
    translation models; the Transformer's shared table embeds the source first)."""
    if isinstance(model, transformer.Transformer):
        return "embed/embedding" if model.config.share_embeddings else "source_embed/embedding"
    if isinstance(model, seq2seq_rnn.Seq2SeqRNN):
        return "encoder/embed"
    if isinstance(model.config, bert.BertConfig):
        return "bert/embeddings/word_embeddings"
    if isinstance(model, gpt.GPT):
        return "wte"
    raise ValueError(f"no input embedding path known for {type(model).__name__}")


def embedding_function(task, params, batch, output_fn):
    """(x_BTD, score_fn): the task model's input embeddings on `batch` and
    score_fn(x_BTD) = output_fn(outputs, batch) of the model run on embeddings x_BTD."""
    path = input_embedding_path(task.model)

    def run():
        return task.apply(params, batch)

    x_BTD = module_output(run, path)

    def score_fn(x_BTD):
        return output_fn(with_module_output(run, path, x_BTD), batch)

    return x_BTD, score_fn


def class_probability(labels_key: str = "label"):
    """An `output_fn`: p(class | x) of each row's class `batch[labels_key]` (logits_BC)."""

    def output_fn(logits_BC, batch):
        probs_BC = jax.nn.softmax(logits_BC.astype(jnp.promote_types(logits_BC.dtype, jnp.float32)))
        return jnp.take_along_axis(probs_BC, batch[labels_key][:, None], axis=1)[:, 0]

    return output_fn


def _row_gradients(score_fn, x_BTD):
    return jax.grad(lambda x: score_fn(x).sum())(x_BTD)


def gradient_times_input(score_fn, x_BTD):
    """attribution_BT = Σ_d ∂F/∂x_td · x_td."""
    return (_row_gradients(score_fn, x_BTD) * x_BTD).sum(-1)


def gradient_norms(score_fn, x_BTD):
    """norm_BT = ‖∂F/∂x_t‖₂: how strongly F depends on each position's embedding."""
    return jnp.linalg.norm(_row_gradients(score_fn, x_BTD), axis=-1)


def integrated_gradients(score_fn, x_BTD, baseline_BTD, *, steps: int = 32):
    """attribution_BT: IG from `baseline_BTD` to `x_BTD`, summed over D, with the path
    integral by `steps`-point Gauss–Legendre quadrature; Σ_t ≈ F(x) − F(baseline)."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if baseline_BTD.shape != x_BTD.shape:
        raise ValueError(f"baseline {baseline_BTD.shape} is not the shape of x {x_BTD.shape}")
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    alphas, weights = (nodes + 1.0) / 2.0, weights / 2.0  # from [-1, 1] to [0, 1]
    delta_BTD = x_BTD - baseline_BTD

    def add(total_BTD, alpha_weight):
        alpha, weight = alpha_weight
        return total_BTD + weight * _row_gradients(score_fn, baseline_BTD + alpha * delta_BTD), None

    path_BTD, _ = jax.lax.scan(
        add,
        jnp.zeros_like(x_BTD),
        (jnp.asarray(alphas, x_BTD.dtype), jnp.asarray(weights, x_BTD.dtype)),
    )
    return (path_BTD * delta_BTD).sum(-1)
