"""Orbax checkpoints that describe themselves, and `load` for notebooks.

A checkpoint at `<workdir>/checkpoints/<step>/` holds three items:
  state   the TrainState (params, optimizer state, step, RNG), sharded as the run had it;
  data    each process's training-iterator state (when the iterator has get_state/set_state);
  config  JSON: {"train": training config, "model": {"module", "config_class", "config"}}.
The "model" entry names the Linen class and its frozen config dataclass by import path, so
`load(path)` rebuilds the model without training code and restores the parameters onto one
device, whatever mesh wrote them.

A checkpoint is data, never code: the names in it are looked up among the project's own models
and those registered in code (`register`), the config values are checked against the config
dataclass's field types, and anything else is refused before any object is built.
"""

import dataclasses
import importlib
import json
import logging
import pkgutil
import types
import typing
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"


# Models any checkpoint may name: the Linen modules with a frozen-dataclass `config` defined in
# the project's own `attention_jax.models` package (found by walking the package, so a new family
# needs no entry here), plus those a user registers in code. A checkpoint names a class by its
# import path, which is looked up here, never imported.
MODELS_PACKAGE = "attention_jax.models"
_registry: dict[str, type[nn.Module]] = {}


def _path(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _annotated_config(model_class):
    """The class `model_class.config` is annotated with, or None."""
    try:
        return typing.get_type_hints(model_class).get("config")
    except (NameError, TypeError):  # not a class, or annotations that do not resolve
        return None


def _has_frozen_config(model_class) -> bool:
    config_class = _annotated_config(model_class)
    return (
        isinstance(config_class, type)
        and dataclasses.is_dataclass(config_class)
        and config_class.__dataclass_params__.frozen
    )


def _config_class(model_class) -> type:
    """The frozen config dataclass `model_class.config` is annotated with."""
    if not _has_frozen_config(model_class):
        raise ValueError(
            f"{getattr(model_class, '__qualname__', model_class)!r} cannot be checkpointed: it "
            "needs a `config` field annotated with a frozen dataclass"
        )
    return _annotated_config(model_class)


def register(model_class: type[nn.Module]) -> type[nn.Module]:
    """Lets checkpoints name `model_class` (a Linen module whose `config` is a frozen dataclass).

    The project's own models (`MODELS_PACKAGE`) need no registration; a user's own model does,
    in code, before `load` (usable as a class decorator). Returns `model_class`.
    """
    if not (isinstance(model_class, type) and issubclass(model_class, nn.Module)):
        raise ValueError(f"{model_class!r} is not a Linen module class")
    _config_class(model_class)
    _registry[_path(model_class)] = model_class
    return model_class


def _own_models() -> dict[str, type[nn.Module]]:
    """Import path -> class of every checkpointable model defined in `MODELS_PACKAGE`."""
    package = importlib.import_module(MODELS_PACKAGE)
    models = {}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{MODELS_PACKAGE}.{info.name}")
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, nn.Module)
                and value.__module__ == module.__name__
                and _has_frozen_config(value)
            ):
                models[_path(value)] = value
    return models


def registered_models() -> dict[str, type[nn.Module]]:
    """Import path -> class of every model a checkpoint may name."""
    return {**_own_models(), **_registry}


def model_spec(model: nn.Module) -> dict:
    """Import paths of the model class and its config dataclass, plus the config values."""
    config = model.config
    if not dataclasses.is_dataclass(config):
        raise ValueError(f"{type(model).__name__}.config must be a dataclass to be checkpointed")
    return {
        "module": _path(type(model)),
        "config_class": _path(type(config)),
        "config": dataclasses.asdict(config),
    }


def _tuples(value):
    """JSON turns tuples into lists; frozen config dataclasses want them back (hashable)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def _has_type(value, hint) -> bool:
    """Whether a JSON value (lists already tuples) is of the field type `hint`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return True
    if hint is None or hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_has_type(v, args[0]) for v in value)
        return len(args) == len(value) and all(map(_has_type, value, args))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return False  # A field type a checkpoint cannot hold (or that this check does not know).


def build_model(spec, source: str = "checkpoint") -> nn.Module:
    """Inverse of `model_spec`, for checkpoints written by older versions of the model too.

    The model class must be one `registered_models()` lists and the config class the frozen
    dataclass it is annotated with; every value must have its field's type. Saved config
    fields named in the config class's optional `RETIRED_FIELDS` (a tuple of str: fields older
    versions had, e.g. a loss setting since moved to the task) are dropped. Anything else is
    a one-line ValueError starting with `source` (the file), raised before anything is built.
    """

    def refuse(problem):
        raise ValueError(f"{source}: {problem}")

    if not (isinstance(spec, dict) and {"module", "config_class", "config"} <= set(spec)):
        refuse("the model entry needs 'module', 'config_class' and 'config'")
    models = registered_models()
    model_class = models.get(spec["module"]) if isinstance(spec["module"], str) else None
    if model_class is None:
        refuse(
            f"model class {spec['module']!r} is not registered (checkpoint.register a model of "
            f"your own); registered: {', '.join(sorted(models))}"
        )
    config_class = _config_class(model_class)
    if spec["config_class"] != _path(config_class):
        refuse(
            f"config class {spec['config_class']!r} is not {_path(config_class)}, the config "
            f"of {spec['module']}"
        )
    if not isinstance(spec["config"], dict):
        refuse(f"the config of {spec['module']} is not a JSON object")
    fields = {field.name: field for field in dataclasses.fields(config_class)}
    hints = typing.get_type_hints(config_class)
    # Fields the constructor does not take (init=False) are derived: dropped like retired ones.
    dropped = {name for name, field in fields.items() if not field.init}
    dropped |= set(getattr(config_class, "RETIRED_FIELDS", ()))
    values = {}
    for name, value in _tuples(spec["config"]).items():
        if name in fields and fields[name].init:
            if not _has_type(value, hints[name]):
                refuse(
                    f"{config_class.__name__}.{name} = {value!r} is not of type "
                    f"{getattr(hints[name], '__name__', hints[name])}"
                )
            values[name] = value
        elif name not in dropped:
            refuse(
                f"model config {spec['config_class']} has field {name!r}, which "
                f"{config_class.__name__} lacks and does not list in RETIRED_FIELDS"
            )
    required = dataclasses.MISSING
    missing = [
        name
        for name, field in fields.items()
        if field.init and name not in values
        if field.default is required and field.default_factory is required
    ]
    if missing:
        refuse(f"model config {spec['config_class']} lacks field(s) {missing}")
    return model_class(config=config_class(**values))


class IteratorStateHandler(ocp.CheckpointHandler):
    """Saves `iterator.get_state()` (JSON-serialisable or bytes) as one file per process."""

    def _path(self, directory: epath.Path, suffix: str) -> epath.Path:
        return directory / f"process_{jax.process_index()}-of-{jax.process_count()}.{suffix}"

    def save(self, directory: epath.Path, args: "IteratorStateSave"):
        state = args.iterator.get_state()
        if isinstance(state, bytes):
            self._path(directory, "bin").write_bytes(state)
        else:
            self._path(directory, "json").write_text(json.dumps(state))

    def restore(self, directory: epath.Path, args: "IteratorStateRestore" = None):
        """Returns the saved state; the caller applies it once the whole checkpoint restored."""
        if self._path(directory, "bin").exists():
            return self._path(directory, "bin").read_bytes()
        return json.loads(self._path(directory, "json").read_text())


@ocp.args.register_with_handler(IteratorStateHandler, for_save=True)
@dataclasses.dataclass
class IteratorStateSave(ocp.args.CheckpointArgs):
    iterator: Any


@ocp.args.register_with_handler(IteratorStateHandler, for_restore=True)
@dataclasses.dataclass
class IteratorStateRestore(ocp.args.CheckpointArgs):
    pass


class Checkpointer:
    """The run's CheckpointManager: keep the newest N, plus the best N by an eval metric."""

    def __init__(self, config, model: nn.Module):
        self.directory = epath.Path(config.workdir).absolute() / CHECKPOINT_DIR
        policies = [ocp.checkpoint_managers.LatestN(n=config.keep_checkpoints)]
        if config.best_metric:
            policies.append(
                ocp.checkpoint_managers.BestN(
                    get_metric_fn=lambda metrics: metrics[config.best_metric],
                    reverse=config.best_mode == "min",
                    n=config.keep_checkpoints,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
            enable_async_checkpointing=config.async_checkpointing,
            cleanup_tmp_directories=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)
        self.description = {"train": config.to_dict(), "model": model_spec(model)}
        self._unreadable = set()

    def save(self, step: int, state, iterator=None, metrics: dict | None = None) -> None:
        """Starts saving (in the background when async).

        A step already on disk is kept, unless it failed to restore: then it is replaced.
        """
        if step in self._unreadable:
            self.manager.delete(step)
            self._unreadable.discard(step)
        elif step in self.manager.all_steps():
            return
        items = {"state": ocp.args.PyTreeSave(state), "config": ocp.args.JsonSave(self.description)}
        if hasattr(iterator, "get_state"):
            items["data"] = IteratorStateSave(iterator)
        self.manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)

    def restore_latest(self, abstract_state, iterator=None):
        """The newest checkpoint that restores, laid out like `abstract_state`; None if none.

        A checkpoint that fails (truncated files, missing items) is skipped with a warning. The
        iterator's state is set only from the checkpoint that restored.
        """
        restore_args = ocp.checkpoint_utils.construct_restore_args(abstract_state)
        for step in sorted(self.manager.all_steps(), reverse=True):
            items = {"state": ocp.args.PyTreeRestore(abstract_state, restore_args=restore_args)}
            if hasattr(iterator, "set_state"):
                items["data"] = IteratorStateRestore()
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(**items))
            except Exception as error:  # Any unreadable checkpoint is skipped, whatever broke.
                message = str(error).splitlines()[0] if str(error) else ""
                logger.warning(
                    "checkpoint %s/%d failed to restore (%s: %s); trying the previous one",
                    self.directory,
                    step,
                    type(error).__name__,
                    message,
                )
                self._unreadable.add(step)
                continue
            if "data" in items:
                iterator.set_state(restored["data"])
            return restored["state"]
        return None

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


@dataclasses.dataclass
class Restored:
    """What `load` returns.

    Attributes:
      config: the run's training config.
      model: the Linen module rebuilt from its saved config (`model.config`).
      params: the "params" collection as arrays on one device: `model.apply({"params": ...})`.
      step: the optimizer step the checkpoint was taken at.
      averaged_steps: the steps whose parameters `average` averaged; empty from `load`.
    """

    config: ml_collections.ConfigDict
    model: nn.Module
    params: Any
    step: int
    averaged_steps: list[int] = dataclasses.field(default_factory=list)


def _checkpoint_directory(path: epath.Path) -> tuple[epath.Path, int | None]:
    """Accepts a workdir, its checkpoints directory, or one step's directory."""
    if (path / CHECKPOINT_DIR).is_dir():
        return path / CHECKPOINT_DIR, None
    if path.name.isdigit() and (path / "config").exists():
        return path.parent, int(path.name)
    return path, None


def load(path, step: int | None = None) -> Restored:
    """Restores a checkpoint's config, model and parameters on this process's first device.

    Only the "config" and "state" items are read, each by its own Orbax handler (the iterator
    state and the optimizer state stay on disk), and the model is checked and rebuilt from the
    config (`build_model`) before any parameter is read.

    Args:
      path: a run's workdir, its `checkpoints` directory, or a step directory inside it.
      step: which step to load; None means the newest (or the one `path` names).
    """
    directory, path_step = _checkpoint_directory(epath.Path(path).absolute())
    step = step if step is not None else path_step
    steps = ocp.utils.checkpoint_steps(directory) if directory.is_dir() else []
    step = max(steps, default=None) if step is None else step
    if step is None or step not in steps:
        raise ValueError(f"no checkpoint {'' if step is None else f'at step {step} '}in {path}")
    config_file = directory / str(step) / "config" / "metadata"
    try:
        description = ocp.JsonCheckpointHandler().restore(config_file.parent)
    except (OSError, ValueError) as error:  # missing, or not JSON (JSONDecodeError)
        raise ValueError(f"{config_file}: not a checkpoint description ({error})") from None
    if not (isinstance(description, dict) and isinstance(description.get("train"), dict)):
        raise ValueError(f"{config_file}: not a checkpoint description (no 'train' object)")
    model = build_model(description.get("model"), source=str(config_file))

    handler = ocp.PyTreeCheckpointHandler()
    state_dir = directory / str(step) / "state"
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = {
        "params": jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
            dict(handler.metadata(state_dir).tree)["params"],
        )
    }
    state_args = ocp.args.PyTreeRestore(
        abstract,
        restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
        partial_restore=True,
    )
    restored = handler.restore(state_dir, args=state_args)
    handler.close()
    return Restored(
        config=ml_collections.ConfigDict(description["train"]),
        model=model,
        params=restored["params"],
        step=step,
    )


def average(path, last: int) -> Restored:
    """The newest `last` checkpoints of a run with their parameters averaged (Polyak averaging of
    the end of training: Vaswani et al. 2017, §6.1, average the last 5 checkpoints of the base
    model). `step` is the newest step; `averaged_steps` lists them all.

    Args:
      path: a run's workdir or its `checkpoints` directory.
      last: how many of the newest checkpoints to average; the run must have kept that many
        (`keep_checkpoints`).
    """
    directory, _ = _checkpoint_directory(epath.Path(path).absolute())
    steps = sorted(ocp.utils.checkpoint_steps(directory))[-last:] if directory.is_dir() else []
    if last < 1 or len(steps) < last:
        raise ValueError(f"averaging {last} checkpoints needs as many in {path}; it has {steps}")
    restored = [load(directory, step) for step in steps]
    params = jax.tree.map(
        lambda *p_K: (sum(p.astype("float32") for p in p_K) / last).astype(p_K[0].dtype),
        *(r.params for r in restored),
    )
    return dataclasses.replace(restored[-1], params=params, averaged_steps=steps)
