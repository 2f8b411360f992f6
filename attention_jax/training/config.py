"""Every setting of the shared training loop with its default, and the checks before training.

Durations may be given in steps or, as BERT's run_classifier.py does, in epochs and as a warmup
proportion; `resolve_durations(config, num_train_examples)` turns the latter into steps, which
`train` requires.
"""

import re

import ml_collections
from ml_collections import config_dict

from attention_jax.training.optim import NO_DECAY_PATTERN

# Logical axis names → mesh axes (data, fsdp, tensor). Models name every parameter dimension
# (nn.with_logical_partitioning) and constrain activations (nn.with_logical_constraint) with
# these names, in the letters of CONTRIBUTING.md's glossary: batch (B), length (T, S), embed (D),
# vocab (V), mlp (F), heads (N), kv (H, the head dim), norm (LayerNorm parameters). Batch is
# split over data and fsdp; with fsdp > 1 the embedding dimension of every weight is sharded
# (ZeRO-3 style); tensor splits heads, MLP hidden units and the vocabulary (Megatron style).
DEFAULT_LOGICAL_AXIS_RULES = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("norm", None),
)

OPTIMIZERS = ("adamw", "bert_adamw", "lamb", "sgd")
SCHEDULES = ("linear", "bert_linear", "inverse_sqrt", "cosine", "constant")
PARALLELISM = ("jit", "pmap")
NAN_POLICIES = ("halt", "skip")
BEST_MODES = ("min", "max")


def default_config() -> ml_collections.ConfigDict:
    """The training fields `train` reads; experiments copy this and override what they need."""
    c = ml_collections.ConfigDict()
    c.workdir = "runs/default"  # Checkpoints go to <workdir>/checkpoints, events to /tensorboard.
    c.seed = 0  # Seeds parameter init and the per-step RNG (dropout, masking).
    c.num_train_steps = 1000  # Optimizer steps in the whole run (resumes count towards it).
    # Passes over the training data and warmup as a fraction of the steps, each used where the
    # field in steps is None (see resolve_durations).
    c.num_train_epochs = config_dict.placeholder(float)  # Epochs, if num_train_steps is None.
    c.batch_size = 32  # Global batch size: examples per optimizer step over all hosts.
    c.grad_accum_steps = 1  # Micro-batches per step; batch_size is split into this many.
    # See optim.py: "bert_adamw" is google-research/bert's AdamWeightDecayOptimizer.
    c.optimizer = "adamw"  # "adamw" (optax, bias-corrected), "bert_adamw", "lamb" or "sgd".
    c.learning_rate = 1e-4  # Peak learning rate, reached at the end of warmup.
    # "linear" decays from the end of warmup, "bert_linear" (google-research/bert's) from step 0.
    c.schedule = "linear"  # "linear", "bert_linear", "inverse_sqrt" (Noam), "cosine", "constant".
    c.warmup_steps = 0  # Steps of linear warmup from 0 to learning_rate.
    c.warmup_proportion = config_dict.placeholder(float)  # Fraction, if warmup_steps is None.
    # On the parameters weight_decay_exclude spares; "sgd" adds it to the gradient (L2).
    c.weight_decay = 0.0  # Decoupled weight decay.
    # Regex searched in each parameter's "/"-joined path: matches get no weight decay.
    c.weight_decay_exclude = NO_DECAY_PATTERN  # Every bias and norm parameter (optim.py).
    c.b1 = 0.9  # Adam/LAMB first-moment decay.
    c.b2 = 0.999  # Adam/LAMB second-moment decay.
    c.eps = 1e-6  # Adam/LAMB denominator epsilon.
    c.momentum = 0.9  # SGD heavy-ball momentum; 0 is plain SGD.
    c.grad_clip_norm = None  # Clip gradients to this global L2 norm; None disables clipping.
    c.dtype = "float32"  # Compute dtype for the model ("float32"|"bfloat16"); params stay float32.
    c.mesh = ml_collections.ConfigDict()  # Device mesh; one axis may be -1 (= remaining devices).
    c.mesh.data = -1  # Data-parallel replicas.
    c.mesh.fsdp = 1  # Fully sharded data parallel: params, grads and optimizer state split.
    c.mesh.tensor = 1  # Tensor (model) parallel: heads, MLP and vocab split.
    c.logical_axis_rules = DEFAULT_LOGICAL_AXIS_RULES  # Logical axis name → mesh axes.
    c.parallelism = "jit"  # "jit" (sharded over the mesh) or "pmap" (data parallel, older code).
    c.multihost = False  # Call jax.distributed.initialize() first (TPU pod slice, multi-GPU).
    c.eval_every_steps = 1000  # Evaluate every N steps and at the end; 0 disables evaluation.
    c.num_eval_steps = None  # Eval batches per evaluation; None runs eval_data() to the end.
    c.log_every_steps = 100  # Write averaged train metrics every N steps.
    c.checkpoint_every_steps = 1000  # Save every N steps and at the end; 0 disables saving.
    c.keep_checkpoints = 3  # Keep the newest N checkpoints (plus the best, see best_metric).
    c.best_metric = None  # Eval metric that also keeps the best checkpoint, e.g. "loss".
    c.best_mode = "min"  # "min" or "max": which value of best_metric is best.
    c.async_checkpointing = True  # Write checkpoints in a background thread.
    c.nan_policy = "halt"  # Non-finite loss/grad: "halt" the run, or "skip" the update.
    c.progress_bar = True  # tqdm bar with steps/s, tokens/s, ETA and MFU on host 0.
    c.tokens_key = None  # Batch key whose nonzero entries count as tokens for tokens/s.
    c.peak_flops_per_device = None  # Peak FLOP/s of one device for MFU; None omits MFU.
    return c


def _one_of(config, name, allowed):
    if config[name] not in allowed:
        raise ValueError(f"training config {name}={config[name]!r} is not one of {allowed}")


def _positive(config, *names):
    for name in names:
        if not config[name] >= 1:
            raise ValueError(f"training config {name}={config[name]!r} must be a positive integer")


def _steps_or(config, steps, other):
    if config[steps] is None and config[other] is None:
        raise ValueError(f"training config needs {steps} or {other}; both are None")


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises a one-line ValueError naming the first problem in `config` (devices not needed)."""
    known = default_config()
    unknown = sorted(set(config.keys()) - set(known.keys()))
    if unknown:
        raise ValueError(f"unknown training config field(s) {unknown}; known: {sorted(known)}")
    missing = sorted(set(known.keys()) - set(config.keys()))
    if missing:
        raise ValueError(f"training config is missing field(s) {missing}")
    unknown_axes = sorted(set(config.mesh.keys()) - set(known.mesh.keys()))
    if unknown_axes:
        raise ValueError(f"unknown mesh axes {unknown_axes}; the mesh axes are data, fsdp, tensor")
    _one_of(config, "optimizer", OPTIMIZERS)
    _one_of(config, "schedule", SCHEDULES)
    _one_of(config, "parallelism", PARALLELISM)
    _one_of(config, "nan_policy", NAN_POLICIES)
    _one_of(config, "best_mode", BEST_MODES)
    _one_of(config, "dtype", ("float32", "bfloat16"))
    try:
        re.compile(config.weight_decay_exclude)
    except (re.error, TypeError) as error:
        raise ValueError(
            f"training config weight_decay_exclude={config.weight_decay_exclude!r} is not a "
            f"regular expression: {error}"
        ) from None
    _steps_or(config, "num_train_steps", "num_train_epochs")
    _steps_or(config, "warmup_steps", "warmup_proportion")
    if config.num_train_steps is not None:
        _positive(config, "num_train_steps")
    _positive(config, "batch_size", "grad_accum_steps", "log_every_steps", "keep_checkpoints")
    for name in ("eval_every_steps", "checkpoint_every_steps", "warmup_steps"):
        if config[name] is not None and config[name] < 0:
            raise ValueError(f"training config {name}={config[name]!r} must be >= 0")
    if config.num_train_epochs is not None and not config.num_train_epochs > 0:
        raise ValueError(
            f"training config num_train_epochs={config.num_train_epochs!r} must be > 0"
        )
    if config.warmup_proportion is not None and not 0 <= config.warmup_proportion <= 1:
        raise ValueError(
            f"training config warmup_proportion={config.warmup_proportion!r} must be in [0, 1]"
        )
    if config.batch_size % config.grad_accum_steps:
        raise ValueError(
            f"batch_size={config.batch_size} is not divisible by "
            f"grad_accum_steps={config.grad_accum_steps}"
        )
    sizes = [config.mesh[axis] for axis in ("data", "fsdp", "tensor")]
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh {dict(config.mesh)}: sizes must be positive, at most one -1")
    if config.parallelism == "pmap" and (config.mesh.fsdp != 1 or config.mesh.tensor != 1):
        raise ValueError("parallelism='pmap' is data parallel only: set mesh.fsdp=mesh.tensor=1")


def resolve_durations(
    config: ml_collections.ConfigDict, num_train_examples: int
) -> ml_collections.ConfigDict:
    """A copy of `config` whose durations are in steps, as BERT's run_classifier.py counts them.

    Where `num_train_steps` is None it becomes max(1, int(num_train_examples / batch_size ·
    num_train_epochs)); where `warmup_steps` is None it becomes int(num_train_steps ·
    warmup_proportion). Steps, where given, win over epochs and proportions; a config already
    in steps comes back as an equal copy.

    Args:
      config: a training config that passes `validate`.
      num_train_examples: examples in one pass over the training data (all processes).
    """
    validate(config)
    resolved = config.copy_and_resolve_references()
    if resolved.num_train_steps is None:
        if not num_train_examples >= 1:
            raise ValueError(
                f"num_train_examples={num_train_examples!r} must be positive to resolve "
                f"num_train_epochs={resolved.num_train_epochs!r}"
            )
        steps = int(num_train_examples / resolved.batch_size * resolved.num_train_epochs)
        resolved.num_train_steps = max(1, steps)
    if resolved.warmup_steps is None:
        resolved.warmup_steps = int(resolved.num_train_steps * resolved.warmup_proportion)
    return resolved


def check_resolved(config: ml_collections.ConfigDict) -> None:
    """A one-line ValueError unless `config`'s durations are in steps (what `train` needs)."""
    unresolved = [name for name in ("num_train_steps", "warmup_steps") if config[name] is None]
    if unresolved:
        raise ValueError(
            f"training config {' and '.join(unresolved)} unresolved (None): call "
            "training.resolve_durations(config, num_train_examples) first"
        )
